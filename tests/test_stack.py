"""`cropflow stack up|status|down`: every service healthy and listening on 127.0.0.1 only,
nothing left behind after down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from net_helpers import beyond_loopback, listeners
from stack_helpers import free_ports

from cropflow.demo import DemoConfig, generate_demo
from cropflow.settings import Settings


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("cropflow"))
    return subprocess.run(
        [exe, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_stack_up_status_down(tmp_path: Path) -> None:
    work = tmp_path / "work"
    prefect, mlflow, dask, dash, stac, maps = free_ports(6)
    env = {
        **os.environ,
        "CROPFLOW_WORKDIR": str(work),
        "CROPFLOW_STACK__PREFECT_PORT": str(prefect),
        "CROPFLOW_STACK__MLFLOW_PORT": str(mlflow),
        "CROPFLOW_STACK__DASK_PORT": str(dask),
        "CROPFLOW_STACK__DASK_DASHBOARD_PORT": str(dash),
        "CROPFLOW_STACK__STAC_PORT": str(stac),
        "CROPFLOW_SERVE__PORT": str(maps),
        "CROPFLOW_STACK__DASK_WORKERS": "1",
        "CROPFLOW_STACK__WORK_POOL": "cropflow-stack-test",
    }
    env.pop("PREFECT_API_URL", None)

    # Without a catalog to serve, `up` refuses before starting anything.
    refused = _cli(["stack", "up"], env)
    assert refused.returncode == 2
    assert "no STAC catalog" in refused.stderr and "cropflow demo" in refused.stderr
    assert not list((work / "stack" / "pids").glob("*.pid")) if (work / "stack").exists() else True

    generate_demo(work / "demo", DemoConfig.tiny())
    try:
        up = _cli(["stack", "up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        status = _cli(["stack", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        names = ["prefect-server", "prefect-worker", "mlflow", "dask-scheduler", "dask-workers"]
        for name in [*names, "stac-api", "map-server"]:
            line = next(ln for ln in status.stdout.splitlines() if name in ln)
            assert "healthy" in line, status.stdout
        stac_line = next(ln for ln in status.stdout.splitlines() if "stac-api" in ln)
        assert f"http://127.0.0.1:{stac}" in stac_line
        assert httpx.get(f"http://127.0.0.1:{maps}/maps", timeout=10).json() == []
        # Nothing listens beyond loopback: every socket of every service's process tree (the
        # Dask workers' /health,/metrics servers and the Prefect worker's included).
        running = [
            json.loads(p.read_text())["pid"] for p in (work / "stack" / "pids").glob("*.pid")
        ]
        found = listeners(running)
        assert {prefect, mlflow, dask, dash, stac, maps} <= {f.port for f in found}, found
        assert beyond_loopback(found) == [], found
    finally:
        pids = {
            p.stem: int(p.read_text().split('"pid": ')[1].split(",")[0].rstrip("}"))
            for p in (work / "stack" / "pids").glob("*.pid")
        }
        down = _cli(["stack", "down"], env)
    assert down.returncode == 0, down.stderr
    assert set(pids) == {*names, "stac-api", "map-server"}
    assert not [n for n, pid in pids.items() if _group_alive(pid)]
    after = _cli(["stack", "status"], env)
    assert after.returncode == 1 and "stopped" in after.stdout
    assert Settings(workdir=work).stack_dir.joinpath("logs", "mlflow.log").exists()
