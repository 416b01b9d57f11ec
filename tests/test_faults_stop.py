"""Clean stops: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM stop a command's
flow run within seconds, the run is recorded as crashed (the Prefect API outlives the
Ctrl-C), no process is left behind, and the command says so on one line (exit 130).

The run is a real ``cropflow search`` stuck on a STAC API that accepts connections and never
answers (the case that used to print ``httpx.ConnectError`` for minutes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.faults

CLI = str(Path(sys.executable).parent / "cropflow")


@pytest.fixture
def hanging_api() -> Iterator[tuple[str, list[int]]]:
    """An HTTP server that accepts connections and never answers; counts connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[int] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(1)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


def _flow_states(env: dict[str, str]) -> list[str]:
    """States of every flow run in the Prefect database of ``env``'s PREFECT_HOME."""
    code = (
        "import asyncio, json\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        "        runs = await c.read_flow_runs()\n"
        "        print(json.dumps([r.state.type.value for r in runs]))\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    states: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return states


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_command_stops_its_run_quickly_and_cleanly(
    how: str, tmp_path: Path, hanging_api: tuple[str, list[int]]
) -> None:
    url, accepted = hanging_api
    env = {
        **os.environ,
        "CROPFLOW_WORKDIR": str(tmp_path / "work"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "CROPFLOW_STAC__TIMEOUT_S": "600",
        "CROPFLOW_STAC__DEADLINE_S": "600",
        "PYTHONFAULTHANDLER": "1",  # SIGABRT on a stuck stop dumps every thread's stack
    }
    env.pop("PREFECT_API_URL", None)
    (tmp_path / "prefect-home").mkdir()
    proc = subprocess.Popen(
        [CLI, "search", "--api-url", url, "--provider", "earth-search-v1",
         "--aoi", "13.60,52.05,13.62,52.06"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not accepted:  # the flow run has reached the STAC API: it is running
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "the search never reached the API"
            time.sleep(0.1)
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        t0 = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            proc.send_signal(signal.SIGTERM)  # what a service manager does
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: where it is stuck
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"not stopped within 60 s; its threads:\n{err.decode()[-6000:]}")
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()[-3000:]
    assert stopped_s < 30, f"took {stopped_s:.1f} s to stop"
    text = err.decode()
    assert "interrupted" in text and "Traceback" not in text
    assert "ConnectError" not in text, "the run did not lose its API"
    leftover = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leftover = [
            p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        ]
        if not leftover:
            break
        time.sleep(0.2)
    assert not leftover, f"processes left behind: {leftover}"
    states = _flow_states(env)
    assert states, "the run was recorded"
    assert all(s in ("CRASHED", "CANCELLED", "FAILED") for s in states), states
    print(f"{how}: stopped in {stopped_s:.1f} s; flow runs {states}")


def test_a_slow_prefect_start_is_explained(tmp_path: Path, fixtures_dir: Path) -> None:
    env = {
        **os.environ,
        "CROPFLOW_WORKDIR": str(tmp_path / "work"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "CROPFLOW_STACK__START_TIMEOUT_S": "0.5",  # a machine far too busy to start it
    }
    env.pop("PREFECT_API_URL", None)
    (tmp_path / "prefect-home").mkdir()
    catalog = fixtures_dir / "stac" / "site2-2020_jun_jul-35MNM.geojson"
    done = subprocess.run(
        [CLI, "search", "--catalog", str(catalog), "--provider", "planetary-computer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "did not start within 0.5 s" in done.stderr
    assert "CROPFLOW_STACK__START_TIMEOUT_S" in done.stderr and "Traceback" not in done.stderr
