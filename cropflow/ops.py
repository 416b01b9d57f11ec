"""Operations on Prefect: deployments, triggers, ad-hoc runs, region locks, caching, retries.

The three ways cropflow runs:

* scheduled regional remapping: :func:`deploy_all` applies one cron-scheduled ``remap``
  deployment per region file (``deployments/regions/*.yaml``), an on-demand deployment of
  every flow in ``flows/`` (``retrain`` included, to trigger from the UI), the process work
  pool and one global concurrency limit per region; it is idempotent;
* runs triggered on the server: :func:`trigger` validates the parameters against the flow's
  own signature (its pydantic models) before a run is created, then asks the server, which
  validates them again against the deployment's schema;
* ad-hoc runs: :func:`run_flow` runs a flow in this process (Prefect's ephemeral API unless
  ``PREFECT_API_URL`` is set).

For the flows and tasks: :func:`region_lock` (two remaps of one region never overlap),
:func:`stage_task_options` (stages cached by their inputs across flow runs) and
:func:`network_retry_options` (network stages retry with backoff on transient errors only).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Union, cast, get_args, get_origin
from uuid import UUID

from prefect import Flow, Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, State, TaskRun
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound, ParameterTypeError, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cropflow import __version__
from cropflow.errors import ConfigError, CropflowError, EmptySearchError, StacError
from cropflow.redact import find_credentials, install_log_redaction
from cropflow.regions import REGIONS_DIR, RegionConfig, ScheduleSpec, load_regions
from cropflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger(__name__)
# Every flow imports its tasks, and every task module this one: its process logs no credential.
install_log_redaction()
P = ParamSpec("P")
R = TypeVar("R")

#: The project whose ``flows/`` are deployed (the worker's working directory).
PROJECT_DIR = Path(__file__).resolve().parents[1]
#: The remap flow (one scheduled deployment per region) and the retrain flow.
REMAP_ENTRYPOINT = "flows/remap.py:remap_region"
RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain"
#: Name of the unscheduled deployment every flow gets.
ON_DEMAND = "on-demand"
#: Tags of what :func:`deploy_all` manages (region deployments are pruned by them).
MANAGED_TAG = "cropflow"
REGION_TAG = "cropflow-region"
#: Global concurrency limit of a region is ``remap-<region>`` with one slot.
REGION_LOCK_PREFIX = "remap-"
#: Lease of a held region lock, renewed while the run lives. A killed run's lock frees itself
#: this long after its last renewal (60 s is the shortest lease the Prefect server accepts).
REGION_LOCK_LEASE_S = 60.0
#: A running flow run whose heartbeats (every PREFECT_FLOWS_HEARTBEAT_FREQUENCY s, 180 by
#: default) stop for this long is marked Crashed by the automation :func:`deploy_all` creates.
ZOMBIE_AFTER_S = 600.0
ZOMBIE_AUTOMATION = "cropflow: crash flow runs that stopped heartbeating"
#: Task-level retries of network stages (on top of the HTTP retries of settings.stac).
NETWORK_RETRIES = 3
#: First task-level retry delay; doubles per retry (10, 20, 40 s).
NETWORK_BACKOFF_S = 10.0
#: Jitter of task retry delays (fraction of the delay).
NETWORK_RETRY_JITTER = 0.5


# --- Results and infos ----------------------------------------------------------------------


class DeploymentInfo(BaseModel):
    """A deployment as applied on the server."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str = Field(..., description="Full name 'flow-name/deployment-name'.")
    flow_name: str
    deployment_name: str
    entrypoint: str
    work_pool: str
    cron: str | None = None
    timezone: str | None = None
    active: bool = False
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


class FlowRunInfo(BaseModel):
    """A flow run: where it stands, and where to look at it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    deployment: str | None = None
    state: str = Field(..., description="State type: SCHEDULED, PENDING, RUNNING, COMPLETED ...")
    state_name: str = ""
    message: str | None = None
    url: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        """True when the run has ended (completed, failed, crashed or cancelled)."""
        return self.state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _run_url(run_id: str) -> str | None:
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None


def _run_info(run: FlowRun, deployment: str | None = None) -> FlowRunInfo:
    state = run.state
    return FlowRunInfo(
        id=str(run.id),
        name=run.name,
        deployment=deployment,
        state=state.type.value if state else "UNKNOWN",
        state_name=state.name if state and state.name else "",
        message=state.message if state else None,
        url=_run_url(str(run.id)),
        start_time=run.start_time,
        end_time=run.end_time,
        parameters=dict(run.parameters),
    )


# --- Region lock ----------------------------------------------------------------------------


def region_lock_name(region_name: str) -> str:
    """Name of the global concurrency limit that serialises the remaps of a region."""
    return f"{REGION_LOCK_PREFIX}{region_name}"


def ensure_region_limit(region_name: str, client: SyncPrefectClient | None = None) -> str:
    """Create (or reset to one slot) the region's global concurrency limit; returns its name."""
    name = region_lock_name(region_name)

    def upsert(c: SyncPrefectClient) -> None:
        try:
            c.upsert_global_concurrency_limit_by_name(name, limit=1)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 409:
                raise
            # Created meanwhile by a concurrent run (read-then-create is not atomic).
            c.upsert_global_concurrency_limit_by_name(name, limit=1)

    if client is not None:
        upsert(client)
        return name
    with get_client(sync_client=True) as own:
        upsert(own)
    return name


#: How often a run waiting for a region's file lock tries again.
FILE_LOCK_POLL_S = 0.5


def _busy(region_name: str, name: str, timeout_s: float | None) -> CropflowError:
    return CropflowError(
        f"region {region_name!r} is being remapped by another run (lock {name!r} still held "
        f"after {timeout_s} s)",
        hint="wait for that run (Prefect UI, concurrency limits) or raise the timeout",
    )


@contextmanager
def _server_lock(region_name: str, timeout_s: float | None) -> Iterator[None]:
    """The region's global concurrency limit on the Prefect server, held with a lease."""
    from prefect.concurrency.sync import concurrency

    name = ensure_region_limit(region_name)
    acquired = False
    try:
        with concurrency(
            name,
            occupy=1,
            timeout_seconds=timeout_s,
            lease_duration=REGION_LOCK_LEASE_S,
            strict=True,
        ):
            acquired = True
            yield
    except TimeoutError:
        if acquired:  # raised by the block itself, not by the wait for the slot
            raise
        raise _busy(region_name, name, timeout_s) from None


def region_lock_file(region_name: str, settings: Settings | None = None) -> Path:
    """The lock file of a region on this machine (``<workdir>/locks/remap-<region>.lock``)."""
    folder = (settings or get_settings()).workdir / "locks"
    return folder / f"{region_lock_name(region_name)}.lock"


@contextmanager
def _file_lock(region_name: str, timeout_s: float | None) -> Iterator[None]:
    """An exclusive ``flock`` on the region's lock file: the kernel releases it when the
    holding process dies, however it dies."""
    import fcntl

    path = region_lock_file(region_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with path.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _busy(region_name, str(path), timeout_s) from None
                time.sleep(FILE_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def region_lock(region_name: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the region's one remap slot for the duration of the block.

    Another run of the same region waits here until the slot is free (``timeout_s``: give up
    with a CropflowError; None waits as long as it takes).

    * With a Prefect server (``PREFECT_API_URL``): the region's global concurrency limit,
      created when missing, so ad-hoc runs are serialised as well as deployed ones, on every
      machine. If the holder dies, its slot frees itself when the lease expires
      (:data:`REGION_LOCK_LEASE_S` plus the server's repossessor interval).
    * On Prefect's ephemeral API (the embedded default, one machine): a file lock under the
      workdir. The ephemeral API runs no lease repossessor, so a killed run's slot would stay
      taken forever; the kernel releases a dead process's file lock at once.
    """
    if PREFECT_API_URL.value():
        with _server_lock(region_name, timeout_s):
            yield
    else:
        with _file_lock(region_name, timeout_s):
            yield


# --- Caching and retries of stage tasks -----------------------------------------------------


@dataclass
class SettingsCachePolicy(CachePolicy):
    """Cache key part: cropflow's version and settings (a stage re-runs when they change).

    Stage parameters leave fields unset to mean "from settings" (the STAC API, the provider,
    the MLflow store), so the settings are an input of every stage.
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        text = json.dumps(
            {"version": __version__, "settings": get_settings().model_dump(mode="json")},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _path_of(text: str) -> Path | None:
    """The local path a string names (``file://`` URI or absolute path), else None."""
    if len(text) > 4096:
        return None
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path))
    if text.startswith("/"):
        return Path(text)
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (pydantic models, mappings and sequences walked)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, Path):
        yield str(value)


def file_stamp(path: Path) -> str | None:
    """``path:size:mtime`` of a file, of a Zarr store's root metadata, or of a folder;
    None when nothing is there."""
    probe = path / "zarr.json" if (path / "zarr.json").exists() else path
    try:
        st = probe.stat()
    except OSError:
        return None
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


@dataclass
class InputFilesCachePolicy(CachePolicy):
    """Cache key part: the size and modification time of every local file the inputs name.

    Stages pass references (a search's ItemCollection, a cube's Zarr, a labels file): when the
    file behind a reference is rewritten in place, the stage runs again.
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        stamps: set[str] = set()
        for text in _strings(inputs):
            path = _path_of(text)
            stamp = file_stamp(path) if path is not None else None
            if stamp is not None:
                stamps.add(stamp)
        return hashlib.sha256(json.dumps(sorted(stamps)).encode()).hexdigest()


def missing_outputs(result: Any, workdir: Path) -> list[Path]:
    """Paths under ``workdir`` named by a stage's ``result`` that no longer exist."""
    root = workdir.resolve()
    gone = []
    for text in _strings(result):
        path = _path_of(text)
        if path is not None and path.is_relative_to(root) and not path.exists():
            gone.append(path)
    return gone


def _storage_dir(task: Task[..., Any] | None) -> Path | None:
    storage = getattr(task, "result_storage", None)
    if isinstance(storage, str | Path):
        return Path(storage)
    basepath = getattr(storage, "basepath", None)
    return Path(basepath) if basepath else None


@dataclass
class StageCachePolicy(CachePolicy):
    """Inputs, task code, settings and the files the inputs name; a cached result whose
    outputs were deleted from the workdir is dropped, so the stage runs again."""

    parts: CachePolicy = field(
        default_factory=lambda: (
            INPUTS + TASK_SOURCE + SettingsCachePolicy() + InputFilesCachePolicy()
        )
    )

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        key = self.parts.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        folder = _storage_dir(task_ctx.task)
        if key is not None and folder is not None:
            drop_stale_record(folder / key, get_settings().workdir)
        return key


def drop_stale_record(record: Path, workdir: Path) -> bool:
    """Delete a persisted stage result whose outputs are gone, or that says it is degraded
    (never final: the stage retries what it missed); True when it was dropped."""
    from prefect.results import ResultRecord

    if not record.is_file():
        return False
    try:
        result: Any = ResultRecord.deserialize(record.read_bytes()).result
    except Exception:  # unreadable: recompute rather than fail the run
        log.warning("cached result %s cannot be read: the stage runs again", record)
        record.unlink(missing_ok=True)
        return True
    if getattr(result, "degraded", False) is True:  # e.g. a cube built without some items
        log.warning("cached result %s is degraded: the stage runs again to retry", record)
        record.unlink(missing_ok=True)
        return True
    gone = missing_outputs(result, workdir)
    if gone:
        log.warning(
            "cached result %s names %s, which is gone: the stage runs again", record, gone[0]
        )
        record.unlink(missing_ok=True)
        return True
    return False


#: The cache policy of stage tasks: same inputs, same task code, same settings and unchanged
#: input files -> reuse (while the outputs it names still exist).
STAGE_CACHE_POLICY: CachePolicy = StageCachePolicy()
#: How long a search is reused: a re-run after a crash reuses it; a scheduled run a day later
#: searches again, since new scenes may have been published.
SEARCH_CACHE_EXPIRATION = timedelta(hours=6)


def results_dir(settings: Settings | None = None) -> Path:
    """Where stage results and cache records are persisted (``<workdir>/prefect-results``)."""
    return ((settings or get_settings()).workdir / "prefect-results").resolve()


def stage_task_options(
    settings: Settings | None = None, cache_expiration: timedelta | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``@task`` of a stage that a re-run may reuse::

        @task(name="build-cube", **stage_task_options())

    Results (the small reference models stages return) are persisted as JSON under the
    workdir (as it is when the task module is imported), so runs on any worker or the CLI that
    share the workdir share the cache. ``cache_expiration``: reuse for that long only.
    Recompute with ``PREFECT_TASKS_REFRESH_CACHE=true`` or a flow's ``refresh`` parameter.
    """
    return {
        "cache_policy": STAGE_CACHE_POLICY,
        "cache_expiration": cache_expiration,
        "persist_result": True,
        "result_storage": results_dir(settings),
        "result_serializer": "json",
    }


def refreshed(stage: Task[P, R], refresh: bool) -> Task[P, R]:
    """``stage`` recomputing (and re-caching) its result when ``refresh`` is set."""
    return stage.with_options(refresh_cache=True) if refresh else stage


def _exception_of(state: State) -> BaseException | None:
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # a result that cannot be read: treat as transient
        return exc
    return result if isinstance(result, BaseException) else None


def retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry a failed network stage unless the user must fix something first.

    CropflowErrors are the user's to fix (bad parameters, empty search) and are not retried,
    except StacError (API unreachable or answering errors), which is transient, unless it says
    it is not (``retryable = False``: a search that used up its HTTP retries or its deadline,
    which a task-level retry would only multiply).
    """
    exc = _exception_of(state)
    if isinstance(exc, EmptySearchError):
        return False
    if isinstance(exc, StacError):
        return bool(getattr(exc, "retryable", True))
    return not isinstance(exc, CropflowError)


def network_retry_options(
    retries: int = NETWORK_RETRIES, backoff_s: float = NETWORK_BACKOFF_S
) -> dict[str, Any]:
    """Keyword arguments for ``@task`` of a network stage (STAC search)::

        @task(name="stac-search", **network_retry_options(), **stage_task_options())

    Delays double from ``backoff_s`` with jitter; only transient failures are retried
    (:func:`retry_on_transient`).
    """
    return {
        "retries": retries,
        "retry_delay_seconds": [backoff_s * 2**i for i in range(retries)],
        "retry_jitter_factor": NETWORK_RETRY_JITTER,
        "retry_condition_fn": retry_on_transient,
    }


# --- Flows of the project -------------------------------------------------------------------


@dataclass(frozen=True)
class FlowEntry:
    """A ``@flow`` function found in the project's ``flows/`` folder."""

    name: str
    """The Prefect flow name (``@flow(name=...)``, else the function name with '-')."""
    entrypoint: str
    """``flows/<file>.py:<function>``, relative to the project folder."""


def _flow_decorator_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The flow name if ``node`` is decorated with ``flow`` / ``prefect.flow``, else None."""
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        dotted = ast.unparse(target)
        if dotted not in ("flow", "prefect.flow"):
            continue
        if isinstance(deco, ast.Call):
            for kw in deco.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
        return node.name.replace("_", "-")
    return None


def discover_flows(project_dir: Path = PROJECT_DIR) -> dict[str, FlowEntry]:
    """Every flow of ``<project_dir>/flows/*.py`` by flow name, read without importing."""
    flows: dict[str, FlowEntry] = {}
    for path in sorted((Path(project_dir) / "flows").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = _flow_decorator_name(node)
            if name is None:
                continue
            entry = FlowEntry(name=name, entrypoint=f"flows/{path.name}:{node.name}")
            if name in flows:
                raise ConfigError(
                    f"flow name {name!r} is used twice: {flows[name].entrypoint} and "
                    f"{entry.entrypoint}",
                    hint="give one of them another @flow(name=...)",
                )
            flows[name] = entry
    return flows


def load_flow(project_dir: Path, entrypoint: str) -> Flow[..., Any]:
    """Import the flow at ``entrypoint`` (``path.py:function``) of ``project_dir``."""
    from prefect.flows import load_flow_from_entrypoint

    path, _, func = entrypoint.partition(":")
    file = Path(project_dir) / path
    if not file.is_file():
        raise ConfigError(
            f"flow file {file} does not exist (entrypoint {entrypoint!r})",
            hint="check the project folder and the entrypoint",
        )
    flow: Flow[..., Any] = load_flow_from_entrypoint(f"{file}:{func}", use_placeholder_flow=False)
    return flow


def _single_model_parameter(flow: Flow[..., Any]) -> tuple[str, type[BaseModel]] | None:
    """(name, model) when the flow's only parameter is a pydantic model (or model | None)."""
    params = list(inspect.signature(flow.fn).parameters.values())
    if len(params) != 1:
        return None
    annotation = params[0].annotation
    if isinstance(annotation, str):
        hints = inspect.get_annotations(flow.fn, eval_str=True)
        annotation = hints.get(params[0].name)
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return params[0].name, annotation
    return None


def flow_parameters(
    flow: Flow[..., Any],
    values: Mapping[str, Any] | None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The flow's parameters from ``values``, over ``defaults`` (a deployment's parameters).

    ``values`` holds the flow's parameters by name. For a flow whose only parameter is a
    pydantic model (``def remap_region(params: RemapParams)``), the model's fields may be
    given directly instead: they are set over the defaults' fields of that model, so
    ``{"epochs": 5}`` changes one field of a deployment's parameters and keeps the others.
    """
    values = dict(values or {})
    defaults = dict(defaults or {})
    single = _single_model_parameter(flow)
    if single and values and single[0] not in values:
        base = defaults.get(single[0])
        return {single[0]: {**(base if isinstance(base, Mapping) else {}), **values}}
    return {**defaults, **values}


def _format_validation(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ValidationError):
        parts = []
        for err in cause.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(exc).replace("Flow run received invalid parameters:\n - ", "").replace("\n - ", "; ")


def refuse_credentials(parameters: Any, what: str) -> None:
    """ConfigError naming the parameters that hold a credential (URL userinfo, or a token or
    signature in a query string): parameters are stored in Prefect's database, shown in its
    UI and logged; credentials belong in settings, which flows read where they run."""
    found = list(find_credentials(parameters))
    if found:
        raise ConfigError(
            f"parameter(s) {', '.join(found)} of {what} hold a credential (user:token@ or a "
            "token/signature in the query string); Prefect would store it with the run",
            hint="put it in a setting instead (CROPFLOW_STAC__API_URL, "
            "CROPFLOW_MLFLOW__TRACKING_URI; a region file's api_url: '{stac_api_url}')",
        )


def validate_flow_parameters(
    flow: Flow[..., Any], parameters: Mapping[str, Any], what: str
) -> dict[str, Any]:
    """Validate ``parameters`` with the flow's own pydantic models, as its run will.

    Raises ConfigError with the pydantic message (field location and reason), or when a
    parameter holds a credential (Prefect stores parameters and shows them in its UI).
    """
    refuse_credentials(parameters, what)
    flows_logger = logging.getLogger("prefect.flows")
    level = flows_logger.level
    flows_logger.setLevel(logging.CRITICAL)  # it logs every refusal as an error; we raise
    try:
        return flow.validate_parameters(dict(parameters))
    except (ParameterTypeError, ValidationError, TypeError) as exc:
        raise ConfigError(
            f"invalid parameters for {what}: {_format_validation(exc)}",
            hint=f"see the fields of flow {flow.name!r} (Prefect UI form or `--help`)",
        ) from None
    finally:
        flows_logger.setLevel(level)


def region_parameters(flow: Flow[..., Any], region: RegionConfig) -> dict[str, Any]:
    """The parameters that run ``flow`` (remap or retrain) on ``region``.

    The whole region config is embedded (each run's parameters record exactly what was
    mapped); a flow that takes only a region name gets the name.
    """
    embedded = region.model_dump(mode="json", exclude_defaults=True)
    single = _single_model_parameter(flow)
    candidates: list[dict[str, Any]]
    if single and "region" in single[1].model_fields:
        candidates = [{single[0]: {"region": embedded}}, {single[0]: {"region": region.name}}]
    elif "region" in inspect.signature(flow.fn).parameters:
        candidates = [{"region": embedded}, {"region": region.name}]
    else:
        raise ConfigError(
            f"flow {flow.name!r} has no `region` parameter (nor a parameter model with one)",
            hint="give the flow a parameter model with a `region` field",
        )
    errors: list[ConfigError] = []
    for params in candidates:
        try:
            validate_flow_parameters(flow, params, f"flow {flow.name!r}")
            return params
        except ConfigError as exc:
            errors.append(exc)
    raise errors[0]


# --- Deployments ----------------------------------------------------------------------------


class DeploymentSpec(BaseModel):
    """One deployment to apply: which flow, under which name, with which schedule."""

    model_config = ConfigDict(frozen=True)

    flow_name: str
    entrypoint: str
    name: str
    region: RegionConfig | None = None
    schedule: ScheduleSpec | None = None
    description: str = ""
    tags: list[str] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def plan_deployments(
    regions: Sequence[RegionConfig],
    flows: Mapping[str, FlowEntry],
    remap_entrypoint: str = REMAP_ENTRYPOINT,
    retrain_entrypoint: str = RETRAIN_ENTRYPOINT,
) -> list[DeploymentSpec]:
    """The deployments of a project: on demand for every flow, plus per region.

    Per region: ``<remap flow>/<region>`` (scheduled by the region's cron) and, when the
    region has labels, ``<retrain flow>/<region>`` (on demand).
    """
    by_entry = {f.entrypoint: f for f in flows.values()}
    remap, retrain = by_entry.get(remap_entrypoint), by_entry.get(retrain_entrypoint)
    if regions and remap is None:
        raise ConfigError(
            f"regions are configured but the remap flow {remap_entrypoint!r} does not exist",
            hint="add the remap flow, or remove the region files until it exists",
        )
    specs = [
        DeploymentSpec(
            flow_name=f.name,
            entrypoint=f.entrypoint,
            name=ON_DEMAND,
            description=f"Run flow {f.name} on demand (parameters in the form).",
            tags=[MANAGED_TAG, ON_DEMAND],
        )
        for f in flows.values()
    ]
    for region in regions:
        if remap is not None:
            specs.append(
                DeploymentSpec(
                    flow_name=remap.name,
                    entrypoint=remap.entrypoint,
                    name=region.name,
                    region=region,
                    schedule=region.schedule,
                    description=region.description or f"Remap region {region.name}.",
                    tags=[MANAGED_TAG, REGION_TAG, f"region:{region.name}"],
                )
            )
        if retrain is not None and region.labels is not None:
            specs.append(
                DeploymentSpec(
                    flow_name=retrain.name,
                    entrypoint=retrain.entrypoint,
                    name=region.name,
                    region=region,
                    description=f"Retrain on the labels of region {region.name}.",
                    tags=[MANAGED_TAG, REGION_TAG, f"region:{region.name}"],
                )
            )
    return specs


def require_server() -> str:
    """The Prefect API URL; ConfigError when none is set (deployments need a server)."""
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "no Prefect server: PREFECT_API_URL is not set",
            hint="start the stack (`cropflow stack up`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api, or point it at your server",
        )
    return str(url)


def ensure_work_pool(name: str, client: SyncPrefectClient, settings: Settings) -> None:
    """The stack's process pool is created when missing; any other pool must exist."""
    try:
        client.read_work_pool(name)
        return
    except ObjectNotFound:
        pass
    if name != settings.stack.work_pool:
        raise ConfigError(
            f"work pool {name!r} does not exist on {require_server()}",
            hint=f"create it first, e.g. `prefect work-pool create {name} --type docker` "
            "(see deployments/README.md)",
        )
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    client.create_work_pool(
        WorkPoolCreate(
            name=name,
            type="process",
            base_job_template=ProcessWorker.get_default_base_job_template(),
            description="cropflow: flow runs as processes on this machine",
        )
    )


def ensure_zombie_automation(client: SyncPrefectClient, after_s: float = ZOMBIE_AFTER_S) -> str:
    """Create or update the automation that marks runs without heartbeats Crashed.

    A flow run whose process dies with its machine (or is killed) stays Running on the server
    forever otherwise. ``after_s`` must exceed the workers' heartbeat interval
    (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``). Returns the automation's id.
    """
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    ends = ("Completed", "Failed", "Cancelled", "Crashed")
    automation = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"Marks a flow run Crashed when it has sent no heartbeat for {after_s:.0f} s "
        "(its process died). Created by `cropflow deploy`.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{e}" for e in ends)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {after_s:.0f} s: the run's process is gone",
            )
        ],
    )
    existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if existing:
        client.update_automation(existing[0].id, automation)
        return str(existing[0].id)
    return str(client.create_automation(automation))


def _apply(
    spec: DeploymentSpec,
    project_dir: Path,
    work_pool: str,
    job_variables: Mapping[str, Any] | None,
    client: SyncPrefectClient,
    loaded: dict[str, Flow[..., Any]],
    worker_project_dir: str | None,
) -> DeploymentInfo:
    from prefect import flow as prefect_flow
    from prefect.schedules import Cron

    # from_source/to_deployment/apply dispatch sync or async: called here from sync code.
    if spec.entrypoint not in loaded:
        loaded[spec.entrypoint] = cast(
            "Flow[..., Any]",
            prefect_flow.from_source(source=str(project_dir), entrypoint=spec.entrypoint),
        )
    flow = loaded[spec.entrypoint]
    schedule = spec.schedule
    parameters = region_parameters(flow, spec.region) if spec.region else {}
    deployment = cast(
        "RunnerDeployment",
        flow.to_deployment(
            name=spec.name,
            schedules=[Cron(schedule.cron, timezone=schedule.timezone, active=schedule.active)]
            if schedule
            else None,
            parameters=parameters,
            description=spec.description,
            tags=spec.tags,
            version=__version__,
            enforce_parameter_schema=True,
            work_pool_name=work_pool,
            job_variables=dict(job_variables or {}),
        ),
    )
    if worker_project_dir is not None:  # the project's folder inside the worker's image
        from prefect.runner.storage import LocalStorage

        deployment.storage = LocalStorage(path=worker_project_dir)
    deployment_id = cast("UUID", deployment.apply(work_pool_name=work_pool))
    if schedule is None:  # apply() keeps old schedules when given none: drop them
        for old in client.read_deployment_schedules(deployment_id):
            client.delete_deployment_schedule(deployment_id, old.id)
    return DeploymentInfo(
        id=str(deployment_id),
        name=spec.full_name,
        flow_name=spec.flow_name,
        deployment_name=spec.name,
        entrypoint=spec.entrypoint,
        work_pool=work_pool,
        cron=schedule.cron if schedule else None,
        timezone=schedule.timezone if schedule else None,
        active=bool(schedule and schedule.active),
        parameters=parameters,
        tags=list(spec.tags),
    )


def deploy_all(
    regions_dir: Path = REGIONS_DIR,
    *,
    project_dir: Path = PROJECT_DIR,
    work_pool: str | None = None,
    job_variables: Mapping[str, Any] | None = None,
    remap_entrypoint: str = REMAP_ENTRYPOINT,
    retrain_entrypoint: str = RETRAIN_ENTRYPOINT,
    worker_project_dir: str | None = None,
    zombie_after_s: float | None = ZOMBIE_AFTER_S,
    prune: bool = True,
) -> list[DeploymentInfo]:
    """Apply every deployment of the project and its regions on the Prefect server.

    Idempotent: a second call updates the same deployments (schedules replaced, not added).
    Region files are all validated before the server is touched. With ``prune``, region
    deployments whose region file is gone are deleted. ``work_pool`` defaults to the stack's
    process pool (created when missing); Docker or Kubernetes pools must exist
    (deployments/README.md), ``job_variables`` override their job template (e.g. ``image``)
    and ``worker_project_dir`` is where the project lives in the worker's image (default:
    ``project_dir``, the right one for a process worker on this machine). Runs that stop
    heartbeating for ``zombie_after_s`` are marked Crashed (None: no such automation).
    """
    settings = get_settings()
    regions = load_regions(Path(regions_dir))
    project_dir = Path(project_dir).resolve()
    flows = discover_flows(project_dir)
    specs = plan_deployments(regions, flows, remap_entrypoint, retrain_entrypoint)
    require_server()
    pool = work_pool or settings.stack.work_pool
    infos: list[DeploymentInfo] = []
    loaded: dict[str, Flow[..., Any]] = {}
    with get_client(sync_client=True) as client:
        ensure_work_pool(pool, client, settings)
        for region in regions:
            ensure_region_limit(region.name, client)
        if zombie_after_s is not None:
            ensure_zombie_automation(client, zombie_after_s)
        for spec in specs:
            infos.append(
                _apply(spec, project_dir, pool, job_variables, client, loaded, worker_project_dir)
            )
        if prune:
            region_entries = (remap_entrypoint, retrain_entrypoint)
            region_flows = {f.name for f in flows.values() if f.entrypoint in region_entries}
            for gone in _prune(client, {i.name for i in infos}, region_flows):
                log.info("deleted deployment %s: its region file is gone", gone)
    return infos


def _prune(client: SyncPrefectClient, keep: set[str], flow_names: set[str]) -> list[str]:
    """Delete region deployments (tagged REGION_TAG) of ``flow_names`` not in ``keep``."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    gone = []
    for dep in client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[REGION_TAG]))
    ):
        flow = client.read_flow(dep.flow_id)
        full = f"{flow.name}/{dep.name}"
        if flow.name in flow_names and full not in keep:
            client.delete_deployment(dep.id)
            gone.append(full)
    return gone


# --- Triggering and running -----------------------------------------------------------------


def _working_dir(pull_steps: Sequence[Mapping[str, Any]] | None, default: Path) -> Path:
    for step in pull_steps or []:
        for key, value in step.items():
            if key.endswith("set_working_directory") and isinstance(value, Mapping):
                directory = value.get("directory")
                if directory:
                    return Path(str(directory))
    return default


def find_deployment(client: SyncPrefectClient, name: str) -> Any:
    """The deployment called ``flow/deployment``, or ``<name>/on-demand``, or a unique name."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    candidates = [name] if "/" in name else [f"{name}/{ON_DEMAND}"]
    for full in candidates:
        try:
            return client.read_deployment_by_name(full)
        except ObjectNotFound:
            pass
    if "/" not in name:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
        if len(found) == 1:
            return found[0]
    names = []
    for dep in client.read_deployments(limit=200):
        names.append(f"{client.read_flow(dep.flow_id).name}/{dep.name}")
    raise ConfigError(
        f"no deployment {name!r} on {require_server()}",
        hint=f"use one of: {', '.join(sorted(names)) or 'none (run `cropflow deploy`)'}",
    )


def trigger(
    deployment_name: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    project_dir: Path | None = None,
) -> FlowRunInfo:
    """Start a run of a deployment on the server; invalid parameters create no run.

    ``parameters`` override the deployment's own (see :func:`flow_parameters`). They are
    validated first with the flow's own signature (loaded from the deployment's
    working directory, else ``project_dir``), then by the server against the deployment's
    schema; either refusal is a ConfigError with the field and the reason.
    """
    require_server()
    with get_client(sync_client=True) as client:
        deployment = find_deployment(client, deployment_name)
        flow_name = client.read_flow(deployment.flow_id).name
        full = f"{flow_name}/{deployment.name}"
        if not deployment.entrypoint:
            raise ConfigError(f"deployment {full!r} has no entrypoint", hint="redeploy it")
        where = _working_dir(deployment.pull_steps, Path(project_dir or PROJECT_DIR))
        flow = load_flow(where, deployment.entrypoint)
        given = flow_parameters(flow, parameters, deployment.parameters)
        validate_flow_parameters(flow, given, f"deployment {full!r}")
        try:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=given)
        except PrefectHTTPStatusError as exc:
            detail = _http_detail(exc)
            raise ConfigError(
                f"the server refused a run of {full!r}: {detail}",
                hint="fix the parameters (the deployment's schema is the flow's signature)",
            ) from None
    return _run_info(run, full)


def _http_detail(exc: PrefectHTTPStatusError) -> str:
    try:
        return str(exc.response.json().get("detail", exc))
    except ValueError:
        return str(exc)


def flow_run_info(run_id: str) -> FlowRunInfo:
    """The current state of a flow run."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    return _run_info(run)


def wait_for_run(run_id: str, timeout_s: float = 3600.0, poll_s: float = 1.0) -> FlowRunInfo:
    """Poll a flow run until it ends; CropflowError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = flow_run_info(run_id)
        if info.is_final:
            return info
        if time.monotonic() > deadline:
            raise CropflowError(
                f"flow run {info.name} ({run_id}) is still {info.state} after {timeout_s:.0f} s",
                hint="check that a worker polls the deployment's work pool (`cropflow stack "
                "status`)",
            )
        time.sleep(poll_s)


def run_flow(
    name: str, params: Mapping[str, Any] | None = None, *, project_dir: Path = PROJECT_DIR
) -> Any:
    """Run the flow called ``name`` in this process and return its result.

    ``params`` as for :func:`flow_parameters`; validated before the run starts (ConfigError).
    Uses ``PREFECT_API_URL`` when set, else Prefect's ephemeral local API.
    """
    flows = discover_flows(project_dir)
    entry = flows.get(name) or next(
        (f for f in flows.values() if f.entrypoint.endswith(":" + name)), None
    )
    if entry is None:
        raise ConfigError(
            f"unknown flow {name!r}", hint=f"use one of: {', '.join(sorted(flows)) or 'none'}"
        )
    flow = load_flow(project_dir, entry.entrypoint)
    validated = validate_flow_parameters(flow, flow_parameters(flow, params), f"flow {name!r}")
    for value in validated.values():  # a bad region file fails here, before Prefect starts
        region = getattr(value, "region", None)
        if isinstance(region, str | dict):
            from cropflow.regions import as_region

            as_region(region)
    from cropflow.prefect_api import prefect_api

    with prefect_api():
        return flow(**validated)
