"""The service stack on one machine, without Docker: start, check and stop it as processes.

``cropflow stack up`` starts, bound to ``settings.stack.host`` only (127.0.0.1 by default), a
Prefect server, a Prefect worker on the process work pool, an MLflow server on the embedded
store, a Dask scheduler with workers, the STAC API serving the demo catalog and the map server
(``cropflow serve``). Every listening
socket of these processes is on that host: the Dask workers' HTTP servers (``/health``,
``/metrics``) and the Prefect worker's webserver included, which would otherwise bind 0.0.0.0.
Each runs in its own process session; its log and pid live under ``<workdir>/stack/`` so that
``status`` and ``down`` work from any shell.
The same services in containers are in ``docker-compose.yml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cropflow.errors import ConfigError, CropflowError
from cropflow.processes import pid_alive
from cropflow.redact import DASK_PRELOAD
from cropflow.settings import Settings

HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class Service:
    """One process of the stack: how to start it and how to tell it is healthy."""

    name: str
    argv: list[str]
    url: str
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` reports for one service."""

    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str
    log: Path


def _bin(name: str) -> str:
    """An executable of this environment (next to the interpreter), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"executable {name!r} not found", hint="run ./run demo once to install")
    return found


def _http_ok(url: str) -> HealthCheck:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _worker_online(api: str, pool: str, name: str) -> HealthCheck:
    """Healthy when the worker of this name heartbeats on the pool (status ONLINE)."""

    def check() -> bool:
        try:
            r = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and any(
            w.get("name") == name and w.get("status") == "ONLINE" for w in r.json()
        )

    return check


def _dask_workers(dashboard: str, n: int) -> HealthCheck:
    """Healthy when the scheduler reports at least ``n`` workers (Prometheus endpoint)."""

    def check() -> bool:
        try:
            r = httpx.get(f"{dashboard}/json/counts.json", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and int(r.json().get("workers", 0)) >= n

    return check


def browser_host(host: str) -> str:
    """The address a browser on this machine reaches a server bound to ``host`` at."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


def demo_catalog(settings: Settings) -> tuple[Path, Path]:
    """The collection and items files the stack's STAC API serves (the demo region's)."""
    stac_dir = settings.demo_dir / "stac"
    return stac_dir / "collection.json", stac_dir / "items.json"


def plan(settings: Settings) -> list[Service]:
    """The services of the stack, in start order, from settings alone."""
    st = settings.stack
    h = st.host
    prefect_api = f"http://{h}:{st.prefect_port}/api"
    ui_api = f"http://{browser_host(h)}:{st.prefect_port}/api"
    dashboard = f"http://{h}:{st.dask_dashboard_port}"
    mlflow_dir = settings.mlflow_dir.resolve()
    collection, items = demo_catalog(settings)
    base_env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect_home = str((settings.stack_dir / "prefect-home").resolve())
    worker_name = f"cropflow-{h}-{st.prefect_port}"
    return [
        Service(
            name="prefect-server",
            argv=[_bin("prefect"), "server", "start", "--host", h, "--port", str(st.prefect_port)],
            url=f"http://{h}:{st.prefect_port}",
            health=_http_ok(f"{prefect_api}/health"),
            env={
                **base_env,
                "PREFECT_HOME": prefect_home,
                # The UI runs in the browser and reads the API's address from /ui-settings:
                # unset, that stays 127.0.0.1:4200 whatever port the server listens on.
                "PREFECT_UI_API_URL": ui_api,
                "PREFECT_UI_URL": ui_api.removesuffix("/api"),
            },
        ),
        Service(
            name="prefect-worker",
            argv=[
                _bin("prefect"),
                "worker",
                "start",
                "--pool",
                st.work_pool,
                "--type",
                "process",
                "--name",
                worker_name,
            ],
            url=f"{prefect_api} (pool {st.work_pool}, worker {worker_name})",
            health=_worker_online(prefect_api, st.work_pool, worker_name),
            env={
                **base_env,
                "PREFECT_HOME": prefect_home,
                "PREFECT_API_URL": prefect_api,
                # Its health-check webserver (--with-healthcheck) and a runner's webserver
                # default to 0.0.0.0 / localhost: keep them on the stack's host.
                "PREFECT_WORKER_WEBSERVER_HOST": h,
                "PREFECT_RUNNER_SERVER_HOST": h,
                # Flow runs use the stack's MLflow and Dask unless settings name others.
                "CROPFLOW_MLFLOW__TRACKING_URI": settings.mlflow.tracking_uri
                or f"http://{h}:{st.mlflow_port}",
                "CROPFLOW_DASK__ADDRESS": settings.dask.address or f"tcp://{h}:{st.dask_port}",
            },
        ),
        Service(
            name="mlflow",
            argv=[
                _bin("mlflow"),
                "server",
                "--host",
                h,
                "--port",
                str(st.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
                "--workers",
                "1",
            ],
            url=f"http://{h}:{st.mlflow_port}",
            health=_http_ok(f"http://{h}:{st.mlflow_port}/health"),
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
        Service(
            name="dask-scheduler",
            argv=[
                _bin("dask"),
                "scheduler",
                "--host",
                h,
                "--port",
                str(st.dask_port),
                "--dashboard-address",
                f"{h}:{st.dask_dashboard_port}",
                "--preload",
                DASK_PRELOAD,
            ],
            url=f"tcp://{h}:{st.dask_port} (dashboard {dashboard})",
            health=_http_ok(f"{dashboard}/health"),
        ),
        Service(
            name="dask-workers",
            argv=[
                _bin("dask"),
                "worker",
                f"tcp://{h}:{st.dask_port}",
                "--host",
                h,
                "--nworkers",
                str(st.dask_workers),
                "--nthreads",
                str(st.dask_threads),
                "--memory-limit",
                st.dask_memory_limit,
                "--no-dashboard",
                # Without a dashboard a worker still serves /health, /metrics, /sitemap.json;
                # the CLI's default address ":0" means 0.0.0.0.
                "--dashboard-address",
                f"{h}:0",
                "--preload",
                DASK_PRELOAD,
            ],
            url=f"{st.dask_workers} x {st.dask_threads} threads",
            health=_dask_workers(dashboard, st.dask_workers),
        ),
        Service(
            name="stac-api",
            argv=[
                _bin("rustac"),
                "serve",
                "--addr",
                f"{h}:{st.stac_port}",
                str(collection.resolve()),
                str(items.resolve()),
            ],
            url=f"http://{h}:{st.stac_port}",
            health=_http_ok(f"http://{h}:{st.stac_port}/"),
        ),
        Service(
            name="map-server",
            argv=[_bin("cropflow"), "serve"],
            url=f"http://{browser_host(h)}:{settings.serve.port} (web map; API docs at /docs)",
            health=_http_ok(f"http://{h}:{settings.serve.port}/healthz"),
            env={
                # On-demand maps are flow runs of the stack's server, read from its MLflow.
                "PREFECT_API_URL": prefect_api,
                "CROPFLOW_MLFLOW__TRACKING_URI": settings.mlflow.tracking_uri
                or f"http://{h}:{st.mlflow_port}",
            },
        ),
    ]


def _paths(settings: Settings, name: str) -> tuple[Path, Path]:
    root = settings.stack_dir
    return root / "pids" / f"{name}.pid", root / "logs" / f"{name}.log"


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(json.loads(pid_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _start(service: Service, settings: Settings) -> int:

    pid_file, log = _paths(settings, service.name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            service.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    pid_file.write_text(json.dumps({"pid": proc.pid, "argv": service.argv}))
    return proc.pid


def _wait_healthy(service: Service, pid: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.health():
            return
        if not pid_alive(pid):
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise CropflowError(
                f"service {service.name} exited during start-up; last log lines:\n{tail}",
                hint=f"read {log}; a port in use is the usual cause (ports are settings)",
            )
        time.sleep(0.5)
    raise CropflowError(
        f"service {service.name} not healthy after {timeout_s:.0f} s",
        hint=f"read {log}, or raise CROPFLOW_STACK__START_TIMEOUT_S",
    )


def status(settings: Settings, services: Sequence[Service] | None = None) -> list[ServiceStatus]:
    """Running and healthy state of every service of the stack."""
    out = []
    for s in services or plan(settings):
        pid_file, log = _paths(settings, s.name)
        pid = _read_pid(pid_file)
        running = pid_alive(pid)
        out.append(ServiceStatus(s.name, pid, running, running and s.health(), s.url, log))
    return out


def up(settings: Settings, services: Sequence[Service] | None = None) -> list[ServiceStatus]:
    """Start every service that is not running, in order, waiting for each to be healthy."""
    chosen = list(services or plan(settings))
    collection, items = demo_catalog(settings)
    if any(s.name == "stac-api" for s in chosen) and not (collection.exists() and items.exists()):
        raise ConfigError(
            f"no STAC catalog to serve at {collection.parent}",
            hint="run `cropflow demo` first to create the region",
        )
    for s in chosen:
        pid_file, log = _paths(settings, s.name)
        pid = _read_pid(pid_file)
        if pid is None or not pid_alive(pid):
            pid = _start(s, settings)
        _wait_healthy(s, pid, log, settings.stack.start_timeout_s)
    return status(settings, chosen)


def _reap(pid: int) -> None:
    """Collect an exited child of this process (tests start the stack in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def down(settings: Settings, timeout_s: float = 20.0) -> list[str]:
    """Stop every service (its whole process group): SIGTERM, then SIGKILL after a timeout."""
    stopped = []
    for s in reversed(plan(settings)):
        pid_file, _ = _paths(settings, s.name)
        pid = _read_pid(pid_file)
        if pid is not None and _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(s.name)
        pid_file.unlink(missing_ok=True)
    return stopped
