"""The local STAC API server: a real ``rustac serve`` started, queried and stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from stac_helpers import read_items, wait_until, write_catalog, write_static_catalog

from cropflow.errors import DataError, StacError
from cropflow.stac.server import LocalStacServer, find_rustac, free_port, port_is_free

SITE2 = "site2-2020_jun_jul-35MNM.geojson"
DEM = "cop-dem-glo-30-pc.json"
CROPFLOW = Path(sys.executable).parent / "cropflow"
READY_S = 60.0  # the CLI imports the whole package first: slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_catalog(tmp_path_factory.mktemp("site2"), read_items(SITE2))


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.ConnectError:
        return True
    return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def rustac_on_port(port: int) -> list[psutil.Process]:
    """Live (not zombie) ``rustac serve`` processes started for ``port`` (the venv's
    ``rustac`` is a Python script: ``python .../rustac serve --addr 127.0.0.1:PORT ...``)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or f"127.0.0.1:{port}" not in cmdline:
            continue
        if any(Path(arg).name == "rustac" for arg in cmdline[:2]) and "serve" in cmdline:
            found.append(proc)
    return found


def listening_on(port: int) -> bool:
    """Whether any socket listens on TCP ``port``."""
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in psutil.net_connections(kind="tcp")
    )


def _assert_all_gone(port: int) -> None:
    """No rustac of ``port`` remains and nothing listens there (polled: a dying child)."""
    wait_until(lambda: not rustac_on_port(port), 30, f"rustac of port {port} gone")
    wait_until(lambda: not listening_on(port), 30, f"nothing listening on {port}")
    assert _refused(f"http://127.0.0.1:{port}/")
    assert port_is_free("127.0.0.1", port)


@contextmanager
def _running(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (a server on ``port``); wait until it answers and has said that it serves
    (rustac answers a moment before Python knows); kill all on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}/"

    def ready() -> bool:
        return "STAC API serving" in log.read_text() and _answers(url)

    try:
        wait_until(lambda: proc.poll() is not None or ready(), READY_S, f"{url} serving")
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for child in rustac_on_port(port):
            child.kill()


def _cli(source: Path | str, port: int) -> list[str]:
    return [str(CROPFLOW), "stac", "serve", str(source), "--port", str(port)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static catalog tree (relative links and asset hrefs) of real items."""
    root = tmp_path_factory.mktemp("tree")
    return write_static_catalog(root, {"cop-dem-glo-30": read_items(DEM)}, loose=read_items(SITE2))


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
    """``serve()`` over a collection and an items file runs until SIGINT, then cleans up."""
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


def test_a_server_started_in_a_thread_outlives_that_thread(catalog: tuple[Path, Path]) -> None:
    """Linux sends the parent-death signal when the *thread* that forked rustac ends: rustac is
    forked by a long-lived thread, so a server started in a worker thread keeps serving."""
    started: list[LocalStacServer] = []
    worker = threading.Thread(target=lambda: started.append(LocalStacServer(*catalog).start()))
    worker.start()
    worker.join(timeout=60)
    (server,) = started
    try:
        for _ in range(5):
            response = httpx.post(server.url + "/search", json={"limit": 1})
            assert response.status_code == 200
        assert server.running
    finally:
        server.stop()


def test_serve_source_stops_on_sigterm(tree: Path, tmp_path: Path) -> None:
    """``serve_source()`` turns SIGTERM into a clean stop: exit 0, its rustac child gone."""
    port = free_port()
    code = (
        "import sys; from cropflow.stac.server import serve_source; "
        "serve_source(sys.argv[1], port=int(sys.argv[2]))"
    )
    cmd = [sys.executable, "-c", code, str(tree), str(port)]
    with _running(cmd, port, tmp_path / "serve.log") as proc:
        (child,) = rustac_on_port(port)
        assert child.ppid() == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
    _assert_all_gone(port)


def test_serve_source_stops_on_sigterm_while_starting(tree: Path, tmp_path: Path) -> None:
    """SIGTERM as soon as rustac exists (before or after it answers): still a clean stop."""
    port = free_port()
    code = (
        "import sys; from cropflow.stac.server import serve_source; "
        "serve_source(sys.argv[1], port=int(sys.argv[2]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tree), str(port)])
    try:
        wait_until(lambda: bool(rustac_on_port(port)) or proc.poll() is not None, 60, "rustac")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_all_gone(port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_serves_any_source_and_stops_cleanly(
    tree: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """``cropflow stac serve <catalog.json> --port P``: a STAC API of the tree until a signal,
    then exit status 0, no rustac left, the port free."""
    port = free_port()
    log = tmp_path / "serve.log"
    with _running(_cli(tree, port), port, log) as proc:
        url = f"http://127.0.0.1:{port}"
        found = httpx.post(url + "/search", json={"limit": 100}).json()["features"]
        assert {f["id"] for f in found} == {i["id"] for i in read_items(DEM) + read_items(SITE2)}
        (child,) = rustac_on_port(port)
        assert child.ppid() == proc.pid
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, log.read_text()
    assert f"at http://127.0.0.1:{port}" in log.read_text()
    _assert_all_gone(port)


@pytest.mark.faults
def test_cli_sigkill_leaves_no_rustac_behind(catalog: tuple[Path, Path], tmp_path: Path) -> None:
    """Even SIGKILL of ``cropflow stac serve`` (a folder: collection.json + items.json) stops
    its rustac child (parent-death signal), so the port is freed."""
    port = free_port()
    with _running(_cli(catalog[0].parent, port), port, tmp_path / "serve.log") as proc:
        (child,) = rustac_on_port(port)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    _assert_all_gone(port)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_cli_names_a_bad_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    done = subprocess.run(
        _cli(missing, free_port()), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not exist" in done.stderr and "nope.ndjson" in done.stderr
    assert "fix:" in done.stderr
