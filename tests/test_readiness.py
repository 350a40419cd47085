"""/readyz names what is down and recovers: a distributed server started before its
(private) Redis, which is then stopped and started again."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import ES_URL, Server, free_port


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server missing: scripts/services.sh installs it"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        assert time.time() < deadline, "private redis did not start"
        time.sleep(0.1)
    return proc


def readyz(server: Server) -> httpx.Response:
    return httpx.get(server.url + "/readyz", timeout=10)


def test_readyz_turns_503_naming_redis_and_recovers(tmp_path: Path) -> None:
    from elasticsearch import Elasticsearch

    from app.storage.elastic_setup import drop_everything

    port = free_port()
    prefix = "sst-readyz"
    srv = Server(tmp_path / "data", backend="distributed", prefix=prefix,
                 extra_env={"STACKSIFT_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    srv.data_dir.mkdir()
    redis = None
    try:
        srv.start()  # Redis is not running yet: the API starts anyway and says why
        down = readyz(srv)
        assert down.status_code == 503
        assert "redis" in down.json()["error"]["message"].lower()
        redis = start_redis(port, tmp_path)
        srv.wait_for(lambda: readyz(srv).status_code == 200, timeout=60)
        redis.terminate()
        redis.wait(timeout=10)
        resp = srv.wait_for(lambda: (r := readyz(srv)).status_code == 503 and r)
        error = resp.json()["error"]
        assert error["code"] == "not_ready" and error["message"].startswith("redis:")
        redis = start_redis(port, tmp_path)
        # Each API process finds its broken connection on its own next ping: ready once
        # all of them answer 200 (each call is a new connection, spread over them).
        srv.wait_for(lambda: all(readyz(srv).status_code == 200 for _ in range(8)))
        assert readyz(srv).json()["status"] == "ready"
    finally:
        srv.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
        drop_everything(Elasticsearch(ES_URL, request_timeout=60), prefix, templates=True)
