"""The real ``retrain`` and ``remap-region`` flows on the stack: Prefect server, process
worker, MLflow server, Dask scheduler and workers, and the STAC API (``cropflow.stack``),
all on 127.0.0.1, with the tiny demo region and the project's own ``demo`` region file.

Runs are triggered through the API as the Prefect UI does (``cropflow.ops.trigger``).
Figures (wall times, cached stages, Prefect's share of a remap) are printed: ``-s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import rasterio
from stack_helpers import ServerStack, free_ports

from cropflow.orchestration import stack
from cropflow.orchestration.deploy import deploy_all
from cropflow.orchestration.runs import FlowRunInfo, trigger, wait_for_run
from cropflow.regions import REGIONS_DIR
from cropflow.settings import Settings, get_settings

pytestmark = pytest.mark.slow

#: The stages a remap caches, in order (tasks inside the region lock).
REMAP_STAGES = ("stac-search", "cube-write", "predict-tiles", "build-products")
REMAP_LOCKED = (
    "stac-search",
    "stac-search-summary",
    "region-search-params",
    "cube-plan",
    "cube-write",
    "cube-summary",
    "pin-model",
    "predict-tiles",
    "build-products",
    "predict-report",
)
#: Small enough for two cores: a short training, small split blocks, several predict tiles.
RETRAIN_PARAMS: dict[str, Any] = {
    "training_set": {"splits": {"block_size_px": 16}},
    "train": {"epochs": 2},
}
PREDICT = {"tile_size": 32}
HEARTBEAT_S = 30

FIGURES: dict[str, Any] = {}


@dataclass
class RealStack(ServerStack):
    regions: Path


@pytest.fixture(scope="module")
def real(session_root: Path) -> Iterator[RealStack]:
    """The whole stack on free ports, the tiny demo region, and the demo region file."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cropflow.demo.area import generate_demo
    from cropflow.demo.config import DemoConfig

    root = Path(tempfile.mkdtemp(prefix="ops-real-", dir=session_root))
    regions = root / "regions"
    regions.mkdir()
    shutil.copy(REGIONS_DIR / "demo.yaml", regions / "demo.yaml")  # the file users deploy
    prefect, mlflow, dask, dash, stac = free_ports(5)
    env = {
        "CROPFLOW_WORKDIR": str(root / "work"),
        "CROPFLOW_STACK__PREFECT_PORT": str(prefect),
        "CROPFLOW_STACK__MLFLOW_PORT": str(mlflow),
        "CROPFLOW_STACK__DASK_PORT": str(dask),
        "CROPFLOW_STACK__DASK_DASHBOARD_PORT": str(dash),
        "CROPFLOW_STACK__STAC_PORT": str(stac),
        "CROPFLOW_STACK__DASK_MEMORY_LIMIT": "3GiB",
        "CROPFLOW_STACK__START_TIMEOUT_S": "180",
        # The processes of this test and the worker's runs use the stack's MLflow server.
        "CROPFLOW_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{mlflow}",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = get_settings()
        t0 = time.perf_counter()
        generate_demo(settings.demo_dir, DemoConfig.tiny())
        FIGURES["tiny_region_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            statuses = stack.up(settings)
            FIGURES["stack_up_s"] = time.perf_counter() - t0
            assert all(s.running and s.healthy for s in statuses), statuses
            api = f"http://127.0.0.1:{prefect}/api"
            with temporary_settings(updates={PREFECT_API_URL: api}):
                t0 = time.perf_counter()
                infos = deploy_all(regions)
                FIGURES["deploy_s"] = time.perf_counter() - t0
                assert {"remap-region/demo", "retrain/demo"} <= {i.name for i in infos}
                yield RealStack(settings, regions)
        finally:
            stack.down(settings)
            shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in FIGURES.items()}
            print("\nreal ops figures:", shown)


def _task_runs(
    real: RealStack, run_id: str, settled: bool = True, timeout_s: float = 60
) -> list[Any]:
    """The task runs of a flow run; of a finished one (``settled``) once all are recorded final.

    Task runs report their states as events that the server persists on its own time, so a
    flow run can read Completed while its last task run still lacks its final state and end
    time (seen on a loaded CI machine); wait for them rather than read a half-recorded run.
    ``settled=False`` reads a running (or killed) run as it stands.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    while True:
        with real.client() as client:
            runs = list(
                client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
                )
            )
        pending = [t.name for t in runs if not (t.state and t.state.is_final() and t.end_time)]
        if not settled or not pending:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"task runs of {run_id} not final within {timeout_s:g} s: {pending}"
            )
        time.sleep(0.5)


def _states(real: RealStack, run_id: str) -> dict[str, str]:
    """Task name -> state name ("Completed", "Cached" ...), for the tasks of a flow run."""
    return {_task_name(t): t.state.name for t in _task_runs(real, run_id) if t.state}


def _by_name(real: RealStack, run_id: str, settled: bool = True) -> dict[str, Any]:
    return {_task_name(t): t for t in _task_runs(real, run_id, settled)}


def _task_name(task_run: Any) -> str:
    """The task's name: its run name without Prefect's ``-<suffix>``."""
    return str(task_run.name).rsplit("-", 1)[0]


def _artifact_keys(real: RealStack, run_id: str) -> set[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with real.client() as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
        )
    return {a.key or a.type or "" for a in artifacts}


def _forget_outputs(settings: Settings) -> None:
    """Delete the cubes and predictions: cached results that name them are then stale."""
    for folder in ("cubes", "predictions"):
        shutil.rmtree(settings.workdir / folder, ignore_errors=True)


def _orchestration_share(real: RealStack, run: FlowRunInfo) -> dict[str, float]:
    """Prefect's share of a finished run: flow wall time minus the time inside task bodies."""
    assert run.start_time is not None and run.end_time is not None
    wall = (run.end_time - run.start_time).total_seconds()
    in_tasks = sum(t.total_run_time.total_seconds() for t in _task_runs(real, run.id))
    return {"wall_s": wall, "in_tasks_s": in_tasks, "prefect_share": (wall - in_tasks) / wall}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deployed_remap_is_scheduled_and_retrain_is_on_demand(real: RealStack) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with real.client() as client:
        remap = client.read_deployment_by_name("remap-region/demo")
        retrain = client.read_deployment_by_name("retrain/demo")
        assert [s.schedule.cron for s in remap.schedules] == ["0 3 * * 1"]
        assert retrain.schedules == []
        deadline = time.monotonic() + 60
        upcoming: list[Any] = []
        while not upcoming and time.monotonic() < deadline:
            time.sleep(1)
            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[remap.id]))
            )
    assert upcoming, "the scheduler created no upcoming run of remap-region/demo"
    assert all(r.state is not None and r.state.type.value == "SCHEDULED" for r in upcoming)


def test_retrain_then_remap_on_the_worker(real: RealStack) -> None:
    from mlflow import MlflowClient

    t0 = time.time()
    run = trigger("retrain/demo", RETRAIN_PARAMS)
    done = wait_for_run(run.id, timeout_s=600, poll_s=1)
    FIGURES["retrain_trigger_to_completed_s"] = time.time() - t0
    assert done.state == "COMPLETED", done.message
    assert done.start_time is not None

    # A model registered on the MLflow server by this run: the champion (none existed).
    settings = real.settings
    uri = settings.mlflow_tracking_uri  # both: other tests leave mlflow's global registry URI
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # the demo region's own registered model (a region file names it, else cropflow-<name>)
    champion = mlflow.get_model_version_by_alias("cropflow-demo", "champion")
    assert champion.run_id is not None
    trained = mlflow.get_run(champion.run_id)
    assert trained.info.status == "FINISHED"
    assert trained.info.start_time / 1000 >= done.start_time.timestamp() - 1
    assert "val_macro_f1" in trained.data.metrics, trained.data.metrics
    assert {
        "stac-search-summary",
        "cube-summary",
        "training-set-classes",
        "training-report",
        "progress",  # of the cube's regions and the training's epochs
    } <= _artifact_keys(real, done.id)

    t0 = time.time()
    remap = trigger("remap-region/demo", {"predict": PREDICT})
    mapped = wait_for_run(remap.id, timeout_s=600, poll_s=1)
    FIGURES["remap_trigger_to_completed_s"] = time.time() - t0
    assert mapped.state == "COMPLETED", mapped.message
    states = _states(real, mapped.id)
    # The retrain searched and built the same cube: the remap reuses both.
    assert states["stac-search"] == "Cached" and states["cube-write"] == "Cached", states
    assert states["predict-tiles"] == "Completed" and states["build-products"] == "Completed"
    keys = _artifact_keys(real, mapped.id)
    assert "predict-report-demo" in keys and "progress" in keys, keys
    products = settings.workdir / "products" / "demo"
    with rasterio.open(products / "class_map.tif") as cog:
        assert cog.crs.to_epsg() == 32633 and cog.read(1).any()
    catalog = json.loads((products / "catalog.json").read_text())
    assert any(link["rel"] == "item" for link in catalog["links"]), catalog["links"]
    FIGURES["remap_mostly_cached"] = _orchestration_share(real, mapped)


def test_two_remaps_of_one_region_run_one_after_the_other(real: RealStack) -> None:
    # Without its cube and prediction, the first remap builds them again (its cached results
    # name deleted outputs); the second waits for the region's lock, then reuses them.
    _forget_outputs(real.settings)
    t0 = time.time()
    first = trigger("remap-region/demo", {"predict": PREDICT})
    second = trigger("remap-region/demo", {"predict": PREDICT})
    finals = [wait_for_run(r.id, timeout_s=600, poll_s=1) for r in (first, second)]
    FIGURES["two_remaps_wall_s"] = time.time() - t0
    assert [f.state for f in finals] == ["COMPLETED", "COMPLETED"], [f.message for f in finals]

    def locked_interval(run_id: str) -> tuple[float, float]:
        runs = [t for t in _task_runs(real, run_id) if _task_name(t) in REMAP_LOCKED]
        assert runs and all(t.start_time and t.end_time for t in runs)
        return (
            min(t.start_time.timestamp() for t in runs),
            max(t.end_time.timestamp() for t in runs),
        )

    a, b = sorted(locked_interval(f.id) for f in finals)
    assert a[1] <= b[0], f"the remaps overlapped: {a} and {b}"
    states = [_states(real, f.id) for f in finals]
    built = next(s for s in states if s["cube-write"] == "Completed")
    reused = next(s for s in states if s is not built)
    assert all(built[s] == "Completed" for s in REMAP_STAGES[1:]), built
    assert all(reused[s] == "Cached" for s in REMAP_STAGES), reused
    full = next(f for f, s in zip(finals, states, strict=True) if s is built)
    share = _orchestration_share(real, full)
    FIGURES["remap_full"] = share
    FIGURES["second_remap_waited_s"] = b[0] - a[0]


def _finished_once_recorded(real: RealStack, run_id: str) -> set[str]:
    """The tasks of a killed run that completed (or came from the cache), read once the server
    has persisted the states sent before the kill: two reads a second apart agree."""

    def finished() -> set[str]:
        return {
            name
            for name, t in _by_name(real, run_id, settled=False).items()
            if t.state is not None and t.state.type.value == "COMPLETED"  # Completed or Cached
        }

    deadline = time.monotonic() + 30
    seen = finished()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = finished()
        if now == seen:
            return now
        seen = now
    return seen


@pytest.mark.faults
def test_killed_remap_rerun_reuses_the_finished_stages(real: RealStack) -> None:
    products = real.settings.workdir / "products" / "demo"
    before = {p.name: _sha(p) for p in products.iterdir() if p.is_file()}
    assert "class_map.tif" in before

    _forget_outputs(real.settings)  # the killed run builds the cube again
    first = trigger("remap-region/demo", {"predict": PREDICT})
    deadline = time.monotonic() + 600
    tasks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        tasks = _by_name(real, first.id, settled=False)
        cube = tasks.get("cube-write")
        if cube is not None and cube.state is not None and cube.state.name == "Completed":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the first remap never finished its cube: {list(tasks)}")

    # The machine "dies": the worker and the flow run's process, without warning.
    with real.client() as client:
        infra = client.read_flow_run(UUID(first.id)).infrastructure_pid
    worker_pid = real.kill_worker()
    if infra:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(str(infra).rsplit(":", 1)[-1]), signal.SIGKILL)
    finished_before_kill = _finished_once_recorded(real, first.id)
    assert "cube-write" in finished_before_kill
    assert "build-products" not in finished_before_kill, "killed too late: the run finished"
    # Nothing of the killed run was published: the previous map is intact, byte for byte.
    assert {p.name: _sha(p) for p in products.iterdir() if p.is_file()} == before

    real.restart_worker(worker_pid)

    t0 = time.time()
    rerun = trigger("remap-region/demo", {"predict": PREDICT})
    done = wait_for_run(rerun.id, timeout_s=600, poll_s=1)
    FIGURES["rerun_after_kill_s"] = time.time() - t0
    assert done.state == "COMPLETED", done.message
    states = _states(real, done.id)
    cached = {s for s in REMAP_STAGES if states[s] == "Cached"}
    recomputed = {s for s in REMAP_STAGES if states[s] == "Completed"}
    # Exactly the stages the killed run had finished come from the cache.
    assert cached == set(REMAP_STAGES) & finished_before_kill, states
    assert recomputed == set(REMAP_STAGES) - finished_before_kill, states
    FIGURES["rerun_cached_stages"] = sorted(cached)
    FIGURES["rerun_recomputed_stages"] = sorted(recomputed)
    with rasterio.open(products / "class_map.tif") as cog:
        assert cog.read(1).any()
    assert not [p for p in products.parent.iterdir() if p.name.startswith(".")], "staging left"
