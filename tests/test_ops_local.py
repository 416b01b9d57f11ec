"""Operations without a server: flow discovery, deployment plans, parameters, ad-hoc runs,
and (on Prefect's temporary test API) caching, retries and the region lock."""

from __future__ import annotations

import contextvars
import shutil
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prefect import flow, task
from prefect.settings import PREFECT_API_URL, temporary_settings
from test_ops_standin import read_events, remap_region, retrain

from cropflow.errors import ConfigError, CropflowError, EmptySearchError, StacError
from cropflow.orchestration.caching import missing_outputs, refreshed, stage_task_options
from cropflow.orchestration.deploy import plan_deployments, zombie_window_warning
from cropflow.orchestration.locks import region_lock, region_lock_name
from cropflow.orchestration.project import (
    ON_DEMAND,
    PROJECT_DIR,
    discover_flows,
    flow_parameters,
    region_parameters,
    validate_flow_parameters,
)
from cropflow.orchestration.retries import network_retry_options
from cropflow.orchestration.runs import require_server, run_flow, trigger
from cropflow.regions import RegionConfig

STANDIN = Path(__file__).with_name("test_ops_standin.py")
REGION = RegionConfig(
    name="alpha",
    aoi=[13.6, 52.05, 13.75, 52.12],
    season={"start": "03-01", "end": "10-31", "year": 2024},
)


@pytest.fixture(autouse=True)
def _own_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))


def _project(tmp_path: Path, **files: str) -> Path:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    for name, text in files.items():
        (project / "flows" / f"{name}.py").write_text(textwrap.dedent(text))
    return project


# --- Discovery and plans --------------------------------------------------------------------


def test_discover_flows_finds_the_project_flows_without_importing_them() -> None:
    flows = discover_flows(PROJECT_DIR)
    assert flows["search"].entrypoint == "flows/search.py:search_flow"
    for entry in flows.values():
        path, _, func = entry.entrypoint.partition(":")
        assert f"def {func}(" in (PROJECT_DIR / path).read_text()


def test_discover_flows_reads_names_and_refuses_duplicates(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        a="""\
        import prefect
        from prefect import flow, task

        @flow(name="named-one", log_prints=True)
        def first(x: int) -> int:
            return x

        @prefect.flow
        def second_flow() -> None: ...

        @task
        def not_a_flow() -> None: ...
        """,
    )
    flows = discover_flows(project)
    assert {n: f.entrypoint for n, f in flows.items()} == {
        "named-one": "flows/a.py:first",
        "second-flow": "flows/a.py:second_flow",
    }
    (project / "flows" / "b.py").write_text(
        "from prefect import flow\n@flow\ndef named_one(): ...\n"
    )
    with pytest.raises(ConfigError, match="named-one"):
        discover_flows(project)


def test_plan_has_on_demand_per_flow_and_remap_retrain_per_region(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "flows").mkdir(parents=True)
    shutil.copy(STANDIN, project / "flows" / "standin.py")
    flows = discover_flows(project)
    labelled = REGION.model_copy(update={"labels": "/x.gpkg", "mapping": "/m.yaml"})
    other = REGION.model_copy(update={"name": "beta"})
    specs = plan_deployments(
        [labelled, other],
        flows,
        remap_entrypoint="flows/standin.py:remap_region",
        retrain_entrypoint="flows/standin.py:retrain",
    )
    assert sorted(s.full_name for s in specs) == sorted(
        [
            f"remap-region/{ON_DEMAND}",
            "remap-region/alpha",
            "remap-region/beta",
            f"retrain/{ON_DEMAND}",
            "retrain/alpha",
        ]
    )
    scheduled = {s.full_name: s.schedule for s in specs}
    assert scheduled["retrain/alpha"] is None
    with pytest.raises(ConfigError, match="remap flow"):
        plan_deployments([REGION], flows)  # the default entrypoint is not in this project


# --- Parameters -----------------------------------------------------------------------------


@given(heartbeat=st.integers(30, 3600), after=st.integers(1, 36000))
@example(heartbeat=30, after=59).via("the test stack's old window was 40 s")
@example(heartbeat=30, after=60)
def test_a_zombie_window_under_two_heartbeats_is_warned_about(heartbeat: int, after: int) -> None:
    warning = zombie_window_warning(float(after), float(heartbeat))
    assert (warning is not None) == (after < 2 * heartbeat)
    if warning:
        assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in warning
    off = zombie_window_warning(600.0, None)
    assert off is not None and "no heartbeats" in off


def test_region_parameters_embed_the_region_config() -> None:
    params = region_parameters(remap_region, REGION)
    assert params == {"params": {"region": REGION.model_dump(mode="json", exclude_defaults=True)}}
    validated = validate_flow_parameters(remap_region, params, "test")
    assert validated["params"].region == REGION


def test_a_project_region_is_given_by_name_and_its_form_puts_options_first() -> None:
    """retrain/demo's form: the region by name (read where the run runs), training first."""
    from prefect.utilities.callables import parameter_schema

    from cropflow.chain import training_set_options_for
    from cropflow.labels import TrainingSetOptions
    from cropflow.regions import get_region
    from flows.remap import remap_region as real_remap
    from flows.retrain import RetrainParams
    from flows.retrain import retrain as real_retrain

    demo = get_region("demo")
    for real in (real_retrain, real_remap):
        assert region_parameters(real, demo) == {"params": {"region": "demo"}}
    # A region not in deployments/regions/ (or changed) is embedded whole.
    changed = demo.model_copy(update={"max_cloud_cover": 10.0})
    assert region_parameters(real_retrain, changed)["params"]["region"]["max_cloud_cover"] == 10

    schema = parameter_schema(real_retrain.fn).model_dump_for_openapi()["definitions"]

    def order(name: str) -> list[str]:
        props = schema[name]["properties"]
        return sorted(props, key=lambda k: props[k]["position"])

    assert order("RetrainParams") == [
        "train",
        "training_set",
        "forecast",
        "region",
        "cube",
        "refresh",
    ]
    assert order("TrainOptions")[:5] == ["epochs", "model", "lr", "batch_size", "seed"]
    assert schema["TrainOptions"]["properties"]["model"]["default"] == {"name": "ltae"}

    # The form sends every default: the region's split block size still applies, unless the
    # run sets its own.
    sent = RetrainParams.model_validate(
        {"region": "demo", "training_set": TrainingSetOptions().model_dump(mode="json")}
    )
    assert training_set_options_for(demo, sent.training_set).splits.block_px == 16
    own = TrainingSetOptions.model_validate({"splits": {"block_size_px": 48}})
    assert training_set_options_for(demo, own).splits.block_px == 48
    bare = demo.model_copy(update={"split_block_px": None})
    assert training_set_options_for(bare, sent.training_set).splits.block_px == 64
    # Patches: 16 px blocks are smaller than a 32 px patch (64 px); a run's own size wins.
    patches = TrainingSetOptions.model_validate({"samples": {"kind": "patch", "patch_size": 32}})
    assert training_set_options_for(demo, patches).splits.block_px == 64
    own_patches = patches.model_copy(update={"splits": own.splits})
    assert training_set_options_for(demo, own_patches).splits.block_px == 48


@given(block=st.integers(1, 600), patch=st.integers(1, 128))
def test_a_region_block_for_patches_is_the_smallest_multiple_two_patches_wide(
    block: int, patch: int
) -> None:
    from cropflow.chain import patch_block_px

    side = patch_block_px(block, patch)
    assert side % patch == 0 and side >= block and side >= 2 * patch
    assert side - patch < max(block, 2 * patch)  # one patch less would be too small


@example(names=["a", "b"], first=["b", "b"], last=["a", "b"])
@given(
    names=st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, max_size=8),
    first=st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=4),
    last=st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=4),
)
def test_form_order_is_a_permutation_with_first_and_last_in_place(
    names: list[str], first: list[str], last: list[str]
) -> None:
    from cropflow.forms import ordered_fields

    out = ordered_fields(names, first, last)
    assert sorted(out) == sorted(names)
    head = [n for n in dict.fromkeys(first) if n in names]
    assert out[: len(head)] == head
    tail = [n for n in dict.fromkeys(last) if n in names and n not in head]
    assert out[len(out) - len(tail) :] == tail


def test_model_fields_are_set_over_the_deployment_defaults() -> None:
    defaults = region_parameters(retrain, REGION)
    merged = flow_parameters(retrain, {"epochs": 4}, defaults)
    assert merged["params"]["epochs"] == 4
    assert merged["params"]["region"] == defaults["params"]["region"]
    # Given by parameter name, they replace the defaults as Prefect does.
    assert flow_parameters(retrain, {"params": {"region": "x"}}, defaults) == {
        "params": {"region": "x"}
    }


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"epochs": 0}, "params.epochs", "greater than or equal to 1"),
        ({"epochs": "many"}, "params.epochs", "valid integer"),
        ({"epoch": 2}, "params.epoch", "Extra inputs are not permitted"),
        ({"region": {"name": "Bad Name"}}, "params.region", "region"),
    ],
)
def test_invalid_parameters_give_the_pydantic_message(
    values: dict[str, Any], field: str, reason: str
) -> None:
    params = flow_parameters(retrain, values, region_parameters(retrain, REGION))
    with pytest.raises(ConfigError) as refused:
        validate_flow_parameters(retrain, params, "deployment 'retrain/alpha'")
    assert field in str(refused.value) and reason in str(refused.value)
    assert "retrain/alpha" in str(refused.value)


def test_no_server_means_no_deploy_and_no_trigger() -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with pytest.raises(ConfigError, match="PREFECT_API_URL"):
            require_server()
        with pytest.raises(ConfigError, match="no Prefect server"):
            trigger("retrain/alpha", {})


# --- On Prefect's temporary test API --------------------------------------------------------


def test_run_flow_validates_then_runs_in_process(prefect_harness: None, tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "flows").mkdir(parents=True)
    shutil.copy(STANDIN, project / "flows" / "standin.py")
    region = REGION.model_dump(mode="json")
    with pytest.raises(ConfigError, match=r"params\.epochs"):
        run_flow("retrain", {"region": region, "epochs": 11}, project_dir=project)
    assert read_events() == []  # refused before the flow ran
    assert run_flow("retrain", {"region": region, "epochs": 2}, project_dir=project) == (
        "model:alpha:2"
    )
    with pytest.raises(ConfigError, match="unknown flow"):
        run_flow("nope", {}, project_dir=project)


def test_stage_cache_is_keyed_by_inputs_and_settings(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    @task(**stage_task_options())
    def stage(ref: str) -> str:
        calls.append(ref)
        return ref.upper()

    @flow
    def pipeline(ref: str) -> str:
        return stage(ref)

    assert pipeline("a") == "A"
    assert pipeline("a") == "A"
    assert calls == ["a"]
    assert pipeline("b") == "B"
    assert calls == ["a", "b"]
    monkeypatch.setenv("CROPFLOW_STAC__PROVIDER", "earth-search-v1")  # a setting changes
    assert pipeline("a") == "A"
    assert calls == ["a", "b", "a"]


def test_stage_cache_sees_an_input_file_rewritten_in_place(
    prefect_harness: None, tmp_path: Path
) -> None:
    calls: list[str] = []
    labels = tmp_path / "labels.csv"
    labels.write_text("a\n")

    @task(**stage_task_options())
    def stage(path: str) -> int:
        calls.append(path)
        return len(Path(path).read_text())

    @flow
    def pipeline(path: str) -> int:
        return stage(path)

    assert pipeline(str(labels)) == 2
    assert pipeline(str(labels)) == 2 and len(calls) == 1  # cached
    time.sleep(0.01)
    labels.write_text("a,b\n")  # same path, new content
    assert pipeline(str(labels)) == 4 and len(calls) == 2


def test_cached_result_naming_a_deleted_output_is_computed_again(
    prefect_harness: None, tmp_path: Path
) -> None:
    from cropflow.settings import get_settings

    calls: list[int] = []

    @task(**stage_task_options())
    def build(n: int) -> str:
        calls.append(n)
        out = get_settings().workdir / "outputs" / f"{n}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(str(n))
        return out.as_uri()

    @flow
    def pipeline(n: int) -> str:
        return build(n)

    uri = pipeline(7)
    assert pipeline(7) == uri and calls == [7]
    out = get_settings().workdir / "outputs" / "7.txt"
    assert missing_outputs({"ref": uri}, get_settings().workdir) == []
    out.unlink()
    assert missing_outputs({"ref": uri}, get_settings().workdir) == [out]
    assert pipeline(7) == uri and calls == [7, 7]
    assert out.read_text() == "7"
    # Paths outside the workdir are never a reason to recompute.
    assert missing_outputs("/nonexistent/elsewhere.tif", get_settings().workdir) == []


def test_refreshed_stage_runs_again_and_replaces_the_cache(prefect_harness: None) -> None:
    calls: list[int] = []

    @task(**stage_task_options())
    def stage(n: int) -> int:
        calls.append(n)
        return n * len(calls)

    @flow
    def pipeline(n: int, refresh: bool) -> int:
        return refreshed(stage, refresh)(n)

    assert pipeline(3, False) == 3
    assert pipeline(3, False) == 3 and calls == [3]
    assert pipeline(3, True) == 6 and calls == [3, 3]
    assert pipeline(3, False) == 6 and calls == [3, 3]  # the refreshed result is the cache now


@pytest.mark.parametrize(
    ("error", "attempts"),
    [
        (StacError("API down"), 3),
        (OSError("reset"), 3),
        (EmptySearchError("none"), 1),
        (ConfigError("bad"), 1),
    ],
)
def test_network_stage_retries_only_transient_errors(
    prefect_harness: None, error: Exception, attempts: int
) -> None:
    tries: list[float] = []

    @task(**network_retry_options(retries=2, backoff_s=0.0))
    def search() -> str:
        tries.append(time.monotonic())
        raise error

    @flow
    def pipeline() -> None:
        search()

    with pytest.raises(type(error)):
        pipeline()
    assert len(tries) == attempts


def test_network_retry_delays_double() -> None:
    options = network_retry_options(retries=3, backoff_s=5.0)
    assert options["retry_delay_seconds"] == [5.0, 10.0, 20.0]


def test_region_lock_serialises_and_times_out(prefect_harness: None) -> None:
    spans: dict[str, tuple[float, float]] = {}
    first_holds = threading.Event()

    def hold(name: str, seconds: float) -> None:
        with region_lock("lockregion"):
            start = time.monotonic()
            first_holds.set()
            time.sleep(seconds)
            spans[name] = (start, time.monotonic())

    one = threading.Thread(target=hold, args=("one", 1.5))
    one.start()
    assert first_holds.wait(60)
    with pytest.raises(CropflowError, match="being remapped"), region_lock("lockregion", 0.5):
        pass
    two = threading.Thread(target=hold, args=("two", 0.1))
    two.start()
    one.join(60)
    two.join(60)
    assert spans["one"][1] <= spans["two"][0]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(region_lock_name("lockregion"))
    assert limit.limit == 1 and limit.active_slots == 0


HOLD_LOCK = """
import sys, time
from cropflow.orchestration.locks import region_lock
with region_lock("fileregion"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_without_a_server_the_region_lock_is_a_file_lock_freed_when_its_holder_dies(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from cropflow.orchestration.locks import region_lock_file

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert PREFECT_API_URL.value() in (None, "")
        env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
        env.pop("PREFECT_API_URL", None)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert region_lock_file("fileregion").exists()
            busy = pytest.raises(CropflowError, match="being remapped")
            with busy, region_lock("fileregion", timeout_s=1.0):
                pass
            holder.send_signal(signal.SIGKILL)  # dies without releasing anything
            holder.wait(30)
            t0 = time.monotonic()
            with region_lock("fileregion", timeout_s=10.0):
                waited = time.monotonic() - t0
            assert waited < 2.0, waited
        finally:
            holder.kill()
        # Two holders in one process are serialised too (one open file each).
        spans: list[tuple[float, float]] = []

        def hold() -> None:
            with region_lock("fileregion"):
                start = time.monotonic()
                time.sleep(0.3)
                spans.append((start, time.monotonic()))

        # Threads do not inherit the temporary settings (a context variable): copy them.
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(hold,)) for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        spans.sort()
        assert len(spans) == 2 and spans[0][1] <= spans[1][0]


def test_prefect_yaml_examples_point_at_real_flows_and_region_schedules() -> None:
    import yaml

    from cropflow.orchestration.deploy import REMAP_ENTRYPOINT, RETRAIN_ENTRYPOINT
    from cropflow.regions import get_region

    spec = yaml.safe_load((PROJECT_DIR / "deployments" / "prefect.yaml").read_text())
    known = {f.entrypoint for f in discover_flows(PROJECT_DIR).values()}
    known |= {REMAP_ENTRYPOINT, RETRAIN_ENTRYPOINT}  # the lead's flows, deployed by name
    pools = set()
    for deployment in spec["deployments"]:
        assert deployment["entrypoint"] in known, deployment["entrypoint"]
        pools.add(deployment["work_pool"]["name"])
        assert deployment["work_pool"]["job_variables"]["image"] == "{{ $CROPFLOW_IMAGE }}"
        for schedule in deployment.get("schedules", []):
            region = get_region(deployment["parameters"]["params"]["region"])
            assert region.schedule is not None
            assert (schedule["cron"], schedule["timezone"]) == (
                region.schedule.cron,
                region.schedule.timezone,
            )
    assert pools == {"cropflow-docker", "cropflow-k8s"}
    step = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "/opt/cropflow"
    assert "WORKDIR /opt/cropflow" in (PROJECT_DIR / "infra" / "Dockerfile").read_text()
