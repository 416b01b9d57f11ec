"""Operations on a real Prefect server and process worker (started with cropflow.stack).

The deployed flows are the stand-ins of ``tests/test_ops_standin.py`` (copied into a temporary
project), which have the shape of the real remap/retrain flows: a pydantic parameter model
with a region, cached stages, and the region lock. Figures (deploy time, orchestration
overhead, lock waits) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
import yaml
from stack_helpers import ServerStack, free_ports
from test_ops_standin import read_events, standin_dir

from cropflow.errors import ConfigError
from cropflow.orchestration import stack
from cropflow.orchestration.deploy import deploy_all
from cropflow.orchestration.locks import region_lock_name
from cropflow.orchestration.runs import (
    DeploymentInfo,
    FlowRunInfo,
    flow_run_info,
    trigger,
    wait_for_run,
)
from cropflow.settings import get_settings

pytestmark = pytest.mark.slow

STANDIN = Path(__file__).with_name("test_ops_standin.py")
REMAP = "flows/standin.py:remap_region"
RETRAIN = "flows/standin.py:retrain"
POOL = "cropflow-test-pool"
#: Monday 03:00 in Berlin: the cron of region alpha.
CRON, TZ = "0 3 * * 1", "Europe/Berlin"

#: Heartbeats of flow runs (the shortest Prefect allows) and the zombie automation's window:
#: three heartbeats, so a heartbeat that a loaded machine delays (CI: one arrived > 10 s late
#: and a live run was marked Crashed with a 40 s window) never crashes a live run.
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 90.0

FIGURES: dict[str, Any] = {}


def _write_region(folder: Path, name: str, **fields: Any) -> Path:
    data: dict[str, Any] = {
        "aoi": [13.60, 52.05, 13.75, 52.12],
        "season": {"start": "03-01", "end": "10-31", "year": "latest"},
        "provider": "local-demo",
        "collections": ["sentinel-2-l2a"],
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@dataclass
class OpsStack(ServerStack):
    project: Path
    regions: Path
    api_url: str
    infos: dict[str, DeploymentInfo] = field(default_factory=dict)

    def deploy(self, regions: Path | None = None) -> list[DeploymentInfo]:
        return deploy_all(
            regions or self.regions,
            project_dir=self.project,
            remap_entrypoint=REMAP,
            retrain_entrypoint=RETRAIN,
            zombie_after_s=ZOMBIE_AFTER_S,
        )


@pytest.fixture(scope="module")
def ops(session_root: Path) -> Iterator[OpsStack]:
    """A Prefect server and a process worker on free ports; a project and region files."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Not under pytest's tmp_path: pytest sessions running beside this one rotate those out.
    root = Path(tempfile.mkdtemp(prefix="ops-", dir=session_root))
    project = root / "project"
    (project / "flows").mkdir(parents=True)
    shutil.copy(STANDIN, project / "flows" / "standin.py")
    regions = root / "regions"
    regions.mkdir()
    (root / "labels.gpkg").write_bytes(b"stand-in")
    (root / "mapping.yaml").write_text("classes: []\n")
    _write_region(
        regions,
        "alpha",
        schedule={"cron": CRON, "timezone": TZ},
        labels="../labels.gpkg",
        mapping="../mapping.yaml",
    )
    _write_region(regions, "beta", schedule={"cron": CRON, "timezone": TZ, "active": False})
    for name in ("gamma", "kappa"):
        _write_region(regions, name)

    port, stac_port = free_ports(2)
    env = {
        "CROPFLOW_WORKDIR": str(root / "work"),
        "CROPFLOW_STACK__PREFECT_PORT": str(port),
        "CROPFLOW_STACK__STAC_PORT": str(stac_port),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        "CROPFLOW_STACK__WORK_POOL": POOL,
        "CROPFLOW_STACK__START_TIMEOUT_S": "180",
        # Faster than the defaults so the test does not wait on polling loops.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = get_settings()
        services = [s for s in stack.plan(settings) if s.name.startswith("prefect-")]
        t0 = time.perf_counter()
        try:
            stack.up(settings, services)
            FIGURES["stack_up_s"] = time.perf_counter() - t0
            api = f"http://127.0.0.1:{port}/api"
            with temporary_settings(updates={PREFECT_API_URL: api}):
                yield OpsStack(settings, project, regions, api)
        finally:
            stack.down(settings)
            shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in FIGURES.items()}
            print("\nops figures:", shown)


@pytest.fixture(scope="module")
def deployed(ops: OpsStack) -> OpsStack:
    t0 = time.perf_counter()
    infos = ops.deploy()
    FIGURES["deploy_all_s"] = time.perf_counter() - t0
    ops.infos = {i.name: i for i in infos}
    return ops


def _runs_of(ops: OpsStack, deployment_id: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with ops.client() as client:
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[UUID(deployment_id)])
                )
            )
        )


def _next_cron_fire(now: datetime) -> datetime:
    """The next Monday 03:00 Berlin time after ``now`` (computed without cron libraries)."""
    local = now.astimezone(ZoneInfo(TZ))
    day = local.date()
    while True:
        candidate = datetime(day.year, day.month, day.day, 3, 0, tzinfo=ZoneInfo(TZ))
        if candidate.weekday() == 0 and candidate > local:
            return candidate
        day += timedelta(days=1)


def test_deploy_all_applies_every_deployment_idempotently(deployed: OpsStack) -> None:
    ops = deployed
    assert set(ops.infos) == {
        "remap-region/on-demand",
        "retrain/on-demand",
        "remap-region/alpha",
        "remap-region/beta",
        "remap-region/gamma",
        "remap-region/kappa",
        "retrain/alpha",  # alpha is the only region with labels
    }
    alpha = ops.infos["remap-region/alpha"]
    assert (alpha.cron, alpha.timezone, alpha.active) == (CRON, TZ, True)
    beta = ops.infos["remap-region/beta"]
    assert (beta.cron, beta.active) == (CRON, False)  # scheduled, but the schedule is off
    assert ops.infos["remap-region/gamma"].cron is None
    embedded = alpha.parameters["params"]["region"]
    assert embedded["name"] == "alpha"
    assert Path(embedded["labels"]).is_absolute()  # resolved against the region file

    again = {i.name: i for i in ops.deploy()}
    assert {n: i.id for n, i in again.items()} == {n: i.id for n, i in ops.infos.items()}

    with ops.client() as client:
        for info in again.values():
            schedules = client.read_deployment_schedules(UUID(info.id))
            assert len(schedules) == (1 if info.cron else 0), info.name
        assert client.read_work_pool(POOL).type == "process"
        for region in ("alpha", "beta", "gamma", "kappa"):
            limit = client.read_global_concurrency_limit_by_name(region_lock_name(region))
            assert limit.limit == 1


def test_scheduled_remap_has_upcoming_runs_at_the_cron_times(deployed: OpsStack) -> None:
    alpha = deployed.infos["remap-region/alpha"]
    deadline = time.monotonic() + 60
    runs: list[Any] = []
    while time.monotonic() < deadline:
        runs = [r for r in _runs_of(deployed, alpha.id) if r.state_type.value == "SCHEDULED"]
        if runs:
            break
        time.sleep(1)
    assert runs, "the scheduler created no upcoming run for the cron deployment"
    first = min(r.expected_start_time for r in runs)
    assert first == _next_cron_fire(datetime.now(UTC))
    for run in runs:
        local = run.expected_start_time.astimezone(ZoneInfo(TZ))
        assert (local.weekday(), local.hour, local.minute) == (0, 3, 0)
    # An inactive schedule creates no runs.
    assert not _runs_of(deployed, deployed.infos["remap-region/beta"].id)


def test_removed_region_is_pruned_and_bad_region_file_is_refused(deployed: OpsStack) -> None:
    ops = deployed
    extra = ops.regions.parent / "regions-extra"
    shutil.copytree(ops.regions, extra)
    _write_region(extra, "delta")
    names = {i.name for i in ops.deploy(extra)}
    assert "remap-region/delta" in names

    # One bad file among good ones (one of them new): refused before the server is touched.
    _write_region(extra, "epsilon")
    _write_region(extra, "omega", schedule={"cron": CRON, "timezone": TZ, "activ": False})
    with pytest.raises(ConfigError) as refused:
        ops.deploy(extra)
    text = str(refused.value)
    assert "omega.yaml" in text and "schedule.activ" in text
    assert "known fields" in (refused.value.hint or "")
    with ops.client() as client:
        from prefect.exceptions import ObjectNotFound

        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name("remap-region/epsilon")

    (extra / "omega.yaml").unlink()
    (extra / "epsilon.yaml").unlink()
    (extra / "delta.yaml").unlink()
    names = {i.name for i in ops.deploy(extra)}
    assert "remap-region/delta" not in names
    with ops.client() as client:
        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name("remap-region/delta")
        client.read_deployment_by_name("remap-region/alpha")  # the others stay


def test_trigger_with_invalid_parameters_is_rejected_before_a_run(deployed: OpsStack) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    ops = deployed
    retrain = ops.infos["retrain/alpha"]
    before = len(_runs_of(ops, retrain.id))

    with pytest.raises(ConfigError) as low:
        trigger("retrain/alpha", {"epochs": 0})
    assert "params.epochs" in str(low.value)
    assert "greater than or equal to 1" in str(low.value)

    with pytest.raises(ConfigError) as extra:
        trigger("retrain/alpha", {"epochs": 2, "epochz": 3})
    assert "params.epochz" in str(extra.value) and "Extra inputs" in str(extra.value)

    with pytest.raises(ConfigError) as typed:
        trigger("remap-region/beta", {"hold_s": "soon"})
    assert "params.hold_s" in str(typed.value)

    with pytest.raises(ConfigError) as unknown:
        trigger("retrain/nowhere", {})
    assert "retrain/alpha" in (unknown.value.hint or "")

    assert len(_runs_of(ops, retrain.id)) == before

    # The server validates too: the same bad parameters sent past the client-side check.
    bad = {"params": {**retrain.parameters["params"], "epochs": 0}}
    with ops.client() as client, pytest.raises(PrefectHTTPStatusError) as server:
        client.create_flow_run_from_deployment(UUID(retrain.id), parameters=bad)
    assert server.value.response.status_code == 409
    assert "params.epochs" in server.value.response.text
    assert len(_runs_of(ops, retrain.id)) == before


def _events(what: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in read_events()
        if e["what"] == what and all(e.get(k) == v for k, v in match.items())
    ]


def test_triggered_retrain_runs_on_the_worker(deployed: OpsStack) -> None:
    t0 = time.time()
    started = time.perf_counter()
    run = trigger("retrain/alpha", {"epochs": 3})
    FIGURES["trigger_call_s"] = time.perf_counter() - started
    assert run.state == "SCHEDULED" and run.deployment == "retrain/alpha"
    done = wait_for_run(run.id, timeout_s=180, poll_s=0.5)
    wall = time.time() - t0
    assert done.state == "COMPLETED", done.message
    assert done.deployment == "retrain/alpha"  # the final state line of `trigger --wait`
    trained = _events("train", region="alpha", epochs=3)
    assert len(trained) == 1 and trained[0]["pid"] != os.getpid()
    assert done.start_time is not None and done.end_time is not None
    FIGURES["retrain_trigger_to_completed_s"] = wall
    FIGURES["retrain_queue_to_start_s"] = done.start_time.timestamp() - t0
    FIGURES["retrain_engine_s"] = (done.end_time - done.start_time).total_seconds()


def wait_for_state(run_id: str, state: str, deadline: float) -> FlowRunInfo:
    info = flow_run_info(run_id)
    while info.state != state and time.monotonic() < deadline:
        time.sleep(1)
        info = flow_run_info(run_id)
    return info


def _interval(region: str, pid: int) -> tuple[float, float]:
    start = next(e["t"] for e in _events("lock-acquired", region=region) if e["pid"] == pid)
    end = next(e["t"] for e in _events("lock-released", region=region) if e["pid"] == pid)
    return start, end


def test_two_remaps_of_one_region_never_overlap(deployed: OpsStack) -> None:
    hold = 4.0
    t0 = time.time()
    runs = [
        trigger("remap-region/beta", {"hold_s": hold}),
        trigger("remap-region/beta", {"hold_s": hold}),
        trigger("remap-region/gamma", {"hold_s": hold}),
    ]
    finals = [wait_for_run(r.id, timeout_s=240, poll_s=0.5) for r in runs]
    wall = time.time() - t0
    assert [f.state for f in finals] == ["COMPLETED"] * 3, [f.message for f in finals]

    beta = sorted(_interval("beta", e["pid"]) for e in _events("flow-start", region="beta"))
    gamma = [_interval("gamma", e["pid"]) for e in _events("flow-start", region="gamma")]
    assert len(beta) == 2 and len(gamma) == 1
    assert beta[0][1] <= beta[1][0], f"beta runs overlapped: {beta}"
    assert all(end - start >= hold for start, end in beta)
    # The lock is per region: gamma held its own while beta's were held.
    assert gamma[0][0] < beta[1][1] and gamma[0][1] > beta[0][0]
    # Stages of the second beta run came from the cache of the first.
    assert len(_events("search", region="beta")) == 1

    flow_start = {e["pid"]: e["t"] for e in _events("flow-start", region="beta")}
    waits = [start - flow_start[pid] for pid, (start, _) in zip(flow_start, beta, strict=False)]
    FIGURES["serialised_three_runs_wall_s"] = wall
    FIGURES["second_beta_waited_s"] = beta[1][0] - min(flow_start.values())
    FIGURES["max_lock_wait_s"] = max(waits)


@pytest.mark.faults
def test_killed_worker_then_rerun_reuses_cached_stages(deployed: OpsStack) -> None:
    ops = deployed
    block = standin_dir() / "block"
    block.parent.mkdir(parents=True, exist_ok=True)
    block.touch()
    first = trigger("remap-region/kappa")
    deadline = time.monotonic() + 180
    starts: list[dict[str, Any]] = []
    while not starts and time.monotonic() < deadline:
        time.sleep(0.5)
        starts = [e for e in _events("map-start") if "kappa" in e["ref"]]
    assert starts, "the first kappa run never reached the map stage"
    flow_pid = starts[0]["pid"]

    # The machine "dies": the worker and the flow-run process are killed without warning.
    worker_pid = ops.kill_worker()
    with contextlib.suppress(ProcessLookupError):
        os.kill(flow_pid, signal.SIGKILL)
    killed_at = time.time()
    block.unlink()
    ops.restart_worker(worker_pid)

    t0 = time.time()
    second = trigger("remap-region/kappa")
    done = wait_for_run(second.id, timeout_s=240, poll_s=0.5)
    assert done.state == "COMPLETED", done.message

    kappa = [
        e for e in read_events() if "kappa" in str(e.get("ref", "")) or e.get("region") == "kappa"
    ]
    counts = {
        w: sum(e["what"] == w for e in kappa) for w in ("search", "cube", "map-start", "map-end")
    }
    assert counts == {"search": 1, "cube": 1, "map-start": 2, "map-end": 1}, counts
    rerun_pid = next(e["pid"] for e in _events("map-end") if "kappa" in e["ref"])
    assert rerun_pid != flow_pid
    acquired = [e["t"] for e in _events("lock-acquired", region="kappa") if e["pid"] == rerun_pid]
    FIGURES["rerun_after_kill_wall_s"] = time.time() - t0
    FIGURES["rerun_waited_for_dead_lock_s"] = acquired[0] - t0
    # The killed run stopped heartbeating: the automation marks it Crashed.
    deadline = time.monotonic() + ZOMBIE_AFTER_S + 60
    killed = wait_for_state(first.id, "CRASHED", deadline)
    assert killed.state == "CRASHED", killed
    assert killed.message and "no heartbeat" in killed.message
    FIGURES["killed_run_crashed_after_kill_s"] = time.time() - killed_at


@pytest.fixture(scope="module")
def demo_stac(deployed: OpsStack) -> OpsStack:
    """The tiny demo region served by the stack's STAC API service (at the env's port)."""
    from cropflow.demo.area import generate_demo
    from cropflow.demo.config import DemoConfig

    t0 = time.perf_counter()
    generate_demo(deployed.settings.demo_dir, DemoConfig.tiny())
    FIGURES["tiny_demo_generate_s"] = time.perf_counter() - t0
    stack.up(deployed.settings, [s for s in stack.plan(deployed.settings) if s.name == "stac-api"])
    return deployed


def test_real_flows_deploy_and_search_the_demo_region_on_the_worker(demo_stac: OpsStack) -> None:
    """The project's own flows deploy; the demo region's search runs on the worker."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from cropflow.regions import REGIONS_DIR, load_region_file

    ops = demo_stac
    no_regions = ops.regions.parent / "no-regions"
    no_regions.mkdir()
    t0 = time.perf_counter()
    infos = deploy_all(no_regions, zombie_after_s=ZOMBIE_AFTER_S)
    FIGURES["deploy_real_flows_s"] = time.perf_counter() - t0
    names = {i.name for i in infos}
    assert "search/on-demand" in names
    assert all(i.entrypoint.startswith("flows/") for i in infos)
    # The chained flows users deploy are among them, on demand (no region files here).
    assert {"remap-region/on-demand", "retrain/on-demand", "demo/on-demand"} <= names

    demo = load_region_file(REGIONS_DIR / "demo.yaml")
    params = demo.search_params().model_dump(mode="json", exclude_none=True)
    assert params["api_url"] == f"http://127.0.0.1:{ops.settings.stack.stac_port}"
    with pytest.raises(ConfigError) as refused:
        trigger("search", {**params, "max_cloud_cover": 150})
    assert "params.max_cloud_cover: Input should be less than or equal to 100" in str(refused.value)

    t0 = time.time()
    run = trigger("search", params)
    done = wait_for_run(run.id, timeout_s=240, poll_s=0.5)
    assert done.state == "COMPLETED", done.message
    FIGURES["search_trigger_to_completed_s"] = time.time() - t0
    with ops.client() as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run.id)]))
        )
    assert {"stac-search-summary", "stac-search-items"} <= {a.key for a in artifacts}
    searches = list((ops.settings.workdir / "searches").glob("*/items.json"))
    assert searches, "the search saved no ItemCollection under the workdir"
