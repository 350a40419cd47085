"""Bounded decoding of request bodies by ``Content-Encoding``.

SDKs compress their bodies (the Python SDK sends ``br`` or ``gzip``, Node sends ``gzip``), and a
small compressed body can expand to gigabytes.  Every decoder here therefore asks the codec for at
most ``max_bytes + 1`` output bytes and stops as soon as that is exceeded: a bomb is refused after
producing about ``max_bytes`` of output, in milliseconds, never after inflating all of it.

The error classes live here (not in a shared errors module) so that ingest code can map every body
problem to an HTTP answer generically through ``status`` and ``code``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli

__all__ = [
    "BadBody",
    "BodyError",
    "PayloadTooLarge",
    "UnsupportedEncoding",
    "decompress",
]


class BodyError(ValueError):
    """A request body the server will not accept; ``status``/``code`` say how to answer."""

    status: int = 400
    code: str = "invalid_body"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadBody(BodyError):
    """Corrupt or malformed body (truncated gzip, invalid brotli, broken envelope...)."""

    status = 400
    code = "invalid_body"


class PayloadTooLarge(BodyError):
    """The body, once decoded, or one item in it, is over a configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedEncoding(BodyError):
    """A ``Content-Encoding`` this server cannot decode."""

    status = 415
    code = "unsupported_encoding"


# Values some SDKs put in Content-Encoding that mean "not encoded" (sentry-ruby 5.x and
# sentry-java Android 2.0 send the charset there).
_NOOP_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8"})
# A real client applies one codec; a header listing many is an attempt to multiply our work.
_MAX_CODECS = 3
# Largest output asked of a codec per call, so about the most a bomb makes us hold beyond
# ``max_bytes`` (brotli's buffer can overshoot by up to one more step).  One step fits an event.
_STEP = 1 << 20


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Decode ``body`` per ``content_encoding``; raise a ``BodyError`` subclass on any problem.

    Encodings listed as ``a, b`` were applied in that order, so they are undone last-first.
    Every stage is capped at ``max_bytes``.  An empty body decodes to ``b""`` whatever the
    encoding, so that the caller reports "empty body" rather than "truncated gzip".
    """
    codecs = _parse_encodings(content_encoding)
    data = body
    for name in reversed(codecs):
        if not data:
            break
        data = _DECODERS[name](data, max_bytes)
    if len(data) > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))
    return data


def _parse_encodings(content_encoding: str | None) -> list[str]:
    if not content_encoding:
        return []
    codecs: list[str] = []
    for raw in content_encoding.split(","):
        name = raw.strip().lower()
        if name in _NOOP_ENCODINGS:
            continue
        if name not in _DECODERS:
            shown = raw.strip()[:40]
            raise UnsupportedEncoding(
                f"unsupported Content-Encoding {shown!r}; supported: gzip, deflate, br, identity"
            )
        codecs.append(name)
    if len(codecs) > _MAX_CODECS:
        raise UnsupportedEncoding(
            f"Content-Encoding lists {len(codecs)} codecs; at most {_MAX_CODECS} are decoded"
        )
    return codecs


def _too_large(max_bytes: int) -> str:
    return f"decompressed body exceeds the limit of {max_bytes} bytes"


def _inflate(data: bytes, max_bytes: int, wbits: int, label: str) -> bytes:
    """zlib-family decode in ``_STEP`` slices so a bomb stops at ``max_bytes + _STEP`` held."""
    out: list[bytes] = []
    total = 0
    gzip_members = wbits > zlib.MAX_WBITS
    while True:
        inflater = zlib.decompressobj(wbits)
        pending = data
        while True:
            step = min(max_bytes - total + 1, _STEP)
            try:
                chunk = inflater.decompress(pending, step)
            except zlib.error as exc:
                raise BadBody(f"corrupt {label} data: {exc}") from None
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(_too_large(max_bytes))
            out.append(chunk)
            if inflater.eof:
                break
            pending = inflater.unconsumed_tail
            if len(chunk) < step and not pending:
                # zlib stopped with room left in the output and nothing left to read.
                raise BadBody(f"truncated {label} data: the stream ends before its end marker")
        rest = inflater.unused_data
        if not rest:
            break
        if gzip_members and rest[:2] == b"\x1f\x8b":
            data = rest  # concatenated gzip members are one valid gzip file (RFC 1952 2.2)
            continue
        if gzip_members and not rest.strip(b"\x00"):
            break  # zero padding after the last member, tolerated like gzip(1) does
        raise BadBody(f"corrupt {label} data: {len(rest)} unexpected bytes after the stream end")
    return out[0] if len(out) == 1 else b"".join(out)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    return _inflate(data, max_bytes, 16 + zlib.MAX_WBITS, "gzip")


def _looks_like_zlib(data: bytes) -> bool:
    """RFC 1950 header: method 8 (deflate), window <= 32 KiB, and the header checksum holds."""
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0


def _deflate(data: bytes, max_bytes: int) -> bytes:
    """HTTP ``deflate`` is zlib-wrapped, but some clients send raw deflate: accept both."""
    if _looks_like_zlib(data):
        try:
            return _inflate(data, max_bytes, zlib.MAX_WBITS, "deflate")
        except BadBody as zlib_error:
            # One raw stream in ~500 starts with bytes that pass the zlib header check.
            try:
                return _inflate(data, max_bytes, -zlib.MAX_WBITS, "deflate")
            except BadBody:
                raise zlib_error from None
    return _inflate(data, max_bytes, -zlib.MAX_WBITS, "deflate")


def _unbrotli(data: bytes, max_bytes: int) -> bytes:
    decoder = brotli.Decompressor()
    out: list[bytes] = []
    total = 0
    pending = data
    try:
        while True:
            step = min(max_bytes - total + 1, _STEP)
            chunk = decoder.process(pending, output_buffer_limit=step)
            pending = b""  # the binding wants empty input until the decoder has drained
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(_too_large(max_bytes))
            out.append(chunk)
            if decoder.is_finished():
                break
            if not chunk:
                # All input consumed, nothing more to emit, and the stream is not over.
                raise BadBody("truncated br data: the stream ends before its last meta-block")
    except brotli.error as exc:
        raise BadBody(f"corrupt br data: {exc}") from None
    return out[0] if len(out) == 1 else b"".join(out)


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _unbrotli,
}
