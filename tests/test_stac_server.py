"""The local STAC API server: a real ``rustac serve`` started, queried and stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from stac_helpers import read_items, write_catalog

from cropflow.errors import DataError, StacError
from cropflow.stac.server import LocalStacServer, find_rustac, free_port

SITE2 = "site2-2020_jun_jul-35MNM.geojson"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_catalog(tmp_path_factory.mktemp("site2"), read_items(SITE2))


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.ConnectError:
        return True
    return False


def test_serves_the_catalog_and_stops(catalog: tuple[Path, Path]) -> None:
    collection, items = catalog
    with LocalStacServer(collection, items) as server:
        assert server.running
        assert server.url.startswith("http://127.0.0.1:")
        root = httpx.get(server.url + "/").json()
        assert "https://api.stacspec.org/v1.0.0/item-search" in root["conformsTo"]
        found = httpx.post(server.url + "/search", json={"limit": 100}).json()["features"]
        assert {f["id"] for f in found} == {f["id"] for f in read_items(SITE2)}
        collections = httpx.get(server.url + "/collections").json()["collections"]
        assert [c["id"] for c in collections] == ["sentinel-2-l2a"]
        url = server.url
    assert not server.running
    assert _refused(url + "/")
    server.stop()  # twice is fine


def test_explicit_port_and_busy_port(catalog: tuple[Path, Path]) -> None:
    collection, items = catalog
    port = free_port()
    with LocalStacServer(collection, items, port=port) as first:
        assert first.url == f"http://127.0.0.1:{port}"
        with pytest.raises(StacError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalStacServer(collection, items, port=port).start()
        assert first.running


def test_bad_catalog_files(tmp_path: Path, catalog: tuple[Path, Path]) -> None:
    collection, items = catalog
    with pytest.raises(DataError, match="does not exist"):
        LocalStacServer(tmp_path / "nope.json", items).start()
    not_collection = tmp_path / "collection.json"
    not_collection.write_text(json.dumps({"type": "Catalog", "id": "x"}))
    with pytest.raises(DataError, match="is not a STAC Collection"):
        LocalStacServer(not_collection, items).start()
    broken = tmp_path / "items.json"
    broken.write_text("{not json")
    with pytest.raises(StacError, match=r"rustac could not serve .*items\.json.*exited") as err:
        LocalStacServer(collection, broken, startup_timeout_s=20).start()
    assert err.value.hint


def test_url_before_start_is_an_error(catalog: tuple[Path, Path]) -> None:
    with pytest.raises(StacError, match="not running"):
        _ = LocalStacServer(*catalog).url


def test_rustac_is_found() -> None:
    exe = find_rustac()
    assert os.access(exe, os.X_OK)


def test_blocking_serve_stops_on_ctrl_c(catalog: tuple[Path, Path]) -> None:
    """``serve()`` (the future ``cropflow stac serve``) runs until SIGINT, then cleans up."""
    collection, items = catalog
    port = free_port()
    code = (
        "import sys; from cropflow.stac.server import serve; "
        "serve(sys.argv[1], sys.argv[2], port=int(sys.argv[3]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(collection), str(items), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        # As a user does: Ctrl-C once serve() says it is serving (the line, or its exit).
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}" in line, line + proc.stdout.read().decode()
        assert httpx.get(url).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert _refused(url), "the rustac child was stopped too"
    finally:
        if proc.poll() is None:
            proc.kill()
