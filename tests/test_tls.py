"""HTTPS served directly by stacksift, with a CA made at test time and the real SDK."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, Server
from tests.test_e2e_sdk import check_grouping, send_python


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt, ext = (folder / n for n in ("server.key", "server.csr", "server.crt", "ext.cnf"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
        "-days",
        "2",
        "-subj",
        "/CN=stacksift test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca_crt, crt, key


class TLSServer(Server):
    certs: tuple[Path, Path, Path] | None = None

    @property
    def context(self) -> ssl.SSLContext:
        assert self.certs
        return ssl.create_default_context(cafile=str(self.certs[0]))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.certs
        ca, crt, key = self.certs
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                "--port",
                str(self.port),
                "--ssl-certfile",
                str(crt),
                "--ssl-keyfile",
                str(key),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if (
                    httpx.get(self.url + "/healthz", verify=self.context, timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError((self.data_dir / "server.log").read_text())

    def get(self, path: str, token: str, **params: object) -> httpx.Response:
        assert self.certs
        return httpx.get(
            self.url + path,
            params=params,
            verify=self.context,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )


@pytest.fixture
def tls_server(tmp_path: Path):
    srv = TLSServer(tmp_path / "data")
    srv.data_dir.mkdir()
    srv.certs = make_certs(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_sdk_sends_over_https_with_our_ca(tls_server: TLSServer) -> None:
    project = tls_server.project()
    assert project.dsn.startswith("https://")
    result = send_python(project.dsn, 2, "--ca-certs", str(tls_server.certs[0]))
    check_grouping(tls_server, project, result["sent"], result["event_ids"])
    # plain HTTP is not served on the TLS port
    with pytest.raises(httpx.TransportError):
        httpx.get(tls_server.url.replace("https", "http") + "/healthz", timeout=2)
