"""Body decoding: round trips, exact caps, bombs, corrupt and unknown encodings."""

from __future__ import annotations

import contextlib
import gzip
import struct
import time
import tracemalloc
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.decompress import (
    BadBody,
    BodyError,
    PayloadTooLarge,
    UnsupportedEncoding,
    decompress,
)

MiB = 1 << 20
GiB = 1 << 30
SAMPLE = b'{"message":"hello","extra":{"n":' + b"1234567890" * 500 + b"}}\n"


def raw_deflate(data: bytes) -> bytes:
    co = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return co.compress(data) + co.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
}


def zeros_stream(wbits: int, total: int) -> bytes:
    """A valid gzip/zlib/raw-deflate stream of ``total`` zero bytes, built without compressing
    them all: after Z_FULL_FLUSH the compressor forgets its history, so every further MiB of
    zeros compresses to the same block, which is repeated; the trailer is computed directly."""
    co = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zero = bytes(MiB)
    first = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
    assert block == co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
    trailer_size = {31: 8, 15: 4, -15: 0}[wbits]
    end = co.flush()
    final_block = end[: len(end) - trailer_size]
    chunks = total // MiB
    if wbits == 31:
        crc = 0
        for _ in range(chunks):
            crc = zlib.crc32(zero, crc)
        trailer = struct.pack("<II", crc, total & 0xFFFFFFFF)
    elif wbits == 15:
        adler = 1
        for _ in range(chunks):
            adler = zlib.adler32(zero, adler)
        trailer = struct.pack(">I", adler)
    else:
        trailer = b""
    return first + block * (chunks - 1) + final_block + trailer


def brotli_zeros(total: int) -> bytes:
    co = brotli.Compressor(quality=1)
    zero = bytes(MiB)
    return b"".join(co.process(zero) for _ in range(total // MiB)) + co.finish()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """1 GiB of zeros in each encoding (each ~0.2-1 MB compressed)."""
    return {
        "gzip": zeros_stream(31, GiB),
        "deflate": zeros_stream(15, GiB),
        "deflate-raw": zeros_stream(-15, GiB),
        "br": brotli_zeros(GiB),
    }


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_round_trip(encoding: str) -> None:
    assert decompress(ENCODERS[encoding](SAMPLE), encoding, MiB) == SAMPLE


def test_raw_deflate_without_zlib_header_is_accepted() -> None:
    body = raw_deflate(SAMPLE)
    with pytest.raises(zlib.error):
        zlib.decompress(body)  # really headerless
    assert decompress(body, "deflate", MiB) == SAMPLE


@pytest.mark.parametrize("encoding", [None, "", "identity", "utf-8", "UTF-8", " Identity "])
def test_no_op_encodings_return_body_unchanged(encoding: str | None) -> None:
    assert decompress(SAMPLE, encoding, MiB) == SAMPLE


def test_encoding_names_are_case_insensitive_and_trimmed() -> None:
    assert decompress(gzip.compress(SAMPLE), " GZip ", MiB) == SAMPLE
    assert decompress(brotli.compress(SAMPLE), "BR", MiB) == SAMPLE


def test_stacked_encodings_are_undone_last_first() -> None:
    # "gzip, br": gzip applied first, then br; so br is decoded first.
    body = brotli.compress(gzip.compress(SAMPLE))
    assert decompress(body, "gzip, br", MiB) == SAMPLE
    assert decompress(body, "gzip, identity, br, utf-8", MiB) == SAMPLE
    with pytest.raises(BadBody):
        decompress(body, "br, gzip", MiB)


def test_concatenated_gzip_members_are_one_body() -> None:
    body = gzip.compress(b"first;") + gzip.compress(b"second")
    assert decompress(body, "gzip", MiB) == b"first;second"


def test_zero_padding_after_gzip_is_tolerated_but_garbage_is_not() -> None:
    body = gzip.compress(SAMPLE)
    assert decompress(body + bytes(16), "gzip", MiB) == SAMPLE
    with pytest.raises(BadBody, match="unexpected bytes after the stream end"):
        decompress(body + b"junk", "gzip", MiB)


def test_empty_body_decodes_to_empty_whatever_the_encoding() -> None:
    for encoding in ["gzip", "deflate", "br", None]:
        assert decompress(b"", encoding, MiB) == b""


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    encoding=st.sampled_from(sorted(ENCODERS) + ["identity"]),
    cap=st.integers(min_value=0, max_value=3000),
)
def test_output_is_exact_or_refused_by_size(data: bytes, encoding: str, cap: int) -> None:
    body = data if encoding == "identity" else ENCODERS[encoding](data)
    if len(data) > cap:
        with pytest.raises(PayloadTooLarge):
            decompress(body, encoding, cap)
    else:
        assert decompress(body, encoding, cap) == data


@pytest.mark.parametrize("encoding", sorted(ENCODERS) + ["identity", "deflate-raw"])
def test_cap_is_inclusive(encoding: str) -> None:
    data = bytes(range(256)) * 40
    if encoding == "identity":
        body = data
    elif encoding == "deflate-raw":
        body, encoding = raw_deflate(data), "deflate"
    else:
        body = ENCODERS[encoding](data)
    assert decompress(body, encoding, len(data)) == data
    with pytest.raises(PayloadTooLarge, match=f"limit of {len(data) - 1} bytes"):
        decompress(body, encoding, len(data) - 1)


# --- bombs ---------------------------------------------------------------------------------


def test_zero_stream_builder_makes_valid_streams() -> None:
    """The bomb tests only prove something if the bombs are real streams."""
    size = 8 * MiB
    assert gzip.decompress(zeros_stream(31, size)) == bytes(size)
    assert zlib.decompress(zeros_stream(15, size)) == bytes(size)
    assert zlib.decompress(zeros_stream(-15, size), -15) == bytes(size)
    assert brotli.decompress(brotli_zeros(size)) == bytes(size)


@pytest.mark.parametrize("kind", ["gzip", "deflate", "deflate-raw", "br"])
def test_bomb_is_refused_quickly_without_inflating(bombs: dict[str, bytes], kind: str) -> None:
    body = bombs[kind]
    assert len(body) < 2 * MiB  # a small request that would expand 500x or more
    encoding = "deflate" if kind == "deflate-raw" else kind
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadTooLarge):
            decompress(body, encoding, MiB)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Inflating 1 GiB takes seconds and a GiB of memory; a capped decoder stops after ~1 MiB.
    assert peak < 6 * MiB, f"peak allocation {peak} bytes"
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_bomb_hidden_under_a_second_layer_is_refused(bombs: dict[str, bytes]) -> None:
    body = gzip.compress(bombs["br"])
    with pytest.raises(PayloadTooLarge):
        decompress(body, "br, gzip", MiB)


# --- corrupt and unsupported ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_truncated_stream_is_bad_body(encoding: str) -> None:
    body = ENCODERS[encoding](SAMPLE)
    for cut in (len(body) // 2, len(body) - 1):
        with pytest.raises(BadBody, match="truncated|corrupt"):
            decompress(body[:cut], encoding, MiB)


def test_truncated_raw_deflate_is_bad_body() -> None:
    body = raw_deflate(SAMPLE)
    with pytest.raises(BadBody, match="truncated deflate"):
        decompress(body[: len(body) // 2], "deflate", MiB)


def test_gzip_with_wrong_checksum_is_bad_body() -> None:
    body = bytearray(gzip.compress(SAMPLE))
    body[-8] ^= 0xFF  # CRC32 in the trailer
    with pytest.raises(BadBody, match="corrupt gzip"):
        decompress(bytes(body), "gzip", MiB)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_garbage_is_bad_body(encoding: str) -> None:
    with pytest.raises(BadBody):
        decompress(b"this is not compressed at all, honestly", encoding, MiB)


def test_brotli_with_trailing_bytes_is_bad_body() -> None:
    with pytest.raises(BadBody, match="corrupt br"):
        decompress(brotli.compress(SAMPLE) + b"xx", "br", MiB)


@pytest.mark.parametrize("encoding", ["zstd", "compress", "gzip, lzma", "bzip2", "gzip;q=1"])
def test_unknown_encoding_is_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedEncoding, match="unsupported Content-Encoding") as info:
        decompress(gzip.compress(SAMPLE), encoding, MiB)
    assert info.value.status == 415


def test_too_many_stacked_codecs_is_unsupported() -> None:
    with pytest.raises(UnsupportedEncoding, match="lists 4 codecs"):
        decompress(b"x", "gzip, gzip, gzip, gzip", MiB)


def test_error_classes_carry_http_mapping() -> None:
    for cls, status, code in [
        (BadBody, 400, "invalid_body"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (UnsupportedEncoding, 415, "unsupported_encoding"),
    ]:
        err = cls("why")
        assert isinstance(err, BodyError) and isinstance(err, ValueError)
        assert (err.status, err.code, err.message, str(err)) == (status, code, "why", "why")


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), encoding=st.sampled_from(["gzip", "deflate", "br"]))
def test_arbitrary_bytes_only_raise_body_errors(body: bytes, encoding: str) -> None:
    with contextlib.suppress(BodyError):
        decompress(body, encoding, 1000)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_output_spanning_several_decoder_steps(encoding: str) -> None:
    # Larger than one 1 MiB step, and the cap landing exactly on a step boundary.
    data = (SAMPLE * 500)[: 2 * MiB]
    body = ENCODERS[encoding](data)
    assert decompress(body, encoding, 2 * MiB) == data
    assert decompress(body, encoding, 3 * MiB) == data
    with pytest.raises(PayloadTooLarge):
        decompress(body, encoding, 2 * MiB - 1)
