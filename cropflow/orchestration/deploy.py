"""Deployments: one scheduled remap per region file, on-demand deployments of every flow, the
work pool, the zombie automation; idempotent."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from pydantic import BaseModel, ConfigDict, Field

from cropflow import __version__
from cropflow.errors import ConfigError
from cropflow.regions import REGIONS_DIR, RegionConfig, ScheduleSpec, load_regions
from cropflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

from cropflow.orchestration.locks import ensure_region_limit
from cropflow.orchestration.project import (
    ON_DEMAND,
    PROJECT_DIR,
    FlowEntry,
    discover_flows,
    region_parameters,
)
from cropflow.orchestration.runs import DeploymentInfo, require_server

log = logging.getLogger(__name__)


#: The remap flow (one scheduled deployment per region) and the retrain flow.
REMAP_ENTRYPOINT = "flows/remap.py:remap_region"
RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain"
#: Tags of what :func:`deploy_all` manages (region deployments are pruned by them).
MANAGED_TAG = "cropflow"
REGION_TAG = "cropflow-region"
#: Name suffix of a region's in-season remap deployment (as of the run's day).
IN_SEASON_SUFFIX = "-in-season"
#: A running flow run whose heartbeats (every PREFECT_FLOWS_HEARTBEAT_FREQUENCY s, 180 by
#: default) stop for this long is marked Crashed by the automation :func:`deploy_all` creates.
ZOMBIE_AFTER_S = 600.0
ZOMBIE_AUTOMATION = "cropflow: crash flow runs that stopped heartbeating"


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
    extra_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Run parameters beside the region (e.g. as_of)."
    )

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

    Per region: ``<remap flow>/<region>`` (scheduled by the region's cron), with an in-season
    schedule ``<remap flow>/<region>-in-season`` (as of the run's day) and, when the region
    has labels, ``<retrain flow>/<region>`` (on demand).
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
        in_season = region.in_season.schedule if region.in_season else None
        if remap is not None and in_season is not None:
            specs.append(
                DeploymentSpec(
                    flow_name=remap.name,
                    entrypoint=remap.entrypoint,
                    name=f"{region.name}{IN_SEASON_SUFFIX}",
                    region=region,
                    schedule=in_season,
                    extra_parameters={"as_of": "today"},
                    description=f"Map region {region.name} in season, as of the run's day "
                    f"(strategy {region.in_season.strategy if region.in_season else ''}).",
                    tags=[MANAGED_TAG, REGION_TAG, f"region:{region.name}", "in-season"],
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


#: The zombie window should hold this many heartbeat intervals (a late one is not a death).
ZOMBIE_MIN_HEARTBEATS = 2.0


def zombie_window_warning(after_s: float, heartbeat_s: float | None) -> str | None:
    """Why a zombie window of ``after_s`` is risky with heartbeats every ``heartbeat_s`` s
    (None: heartbeats off), or None when it is safe."""
    if heartbeat_s is None or heartbeat_s <= 0:
        return (
            "flow runs send no heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset): "
            "the zombie automation will never mark a dead run Crashed; set it (e.g. 180)"
        )
    if after_s < ZOMBIE_MIN_HEARTBEATS * heartbeat_s:
        return (
            f"zombie_after_s={after_s:.0f} is under {ZOMBIE_MIN_HEARTBEATS:.0f} heartbeat "
            f"intervals (PREFECT_FLOWS_HEARTBEAT_FREQUENCY={heartbeat_s:.0f} s): a heartbeat "
            f"that a loaded machine delays will crash a live run; use about "
            f"{3 * heartbeat_s:.0f} s or more"
        )
    return None


def ensure_zombie_automation(client: SyncPrefectClient, after_s: float = ZOMBIE_AFTER_S) -> str:
    """Create or update the automation that marks runs without heartbeats Crashed.

    A flow run whose process dies with its machine (or is killed) stays Running on the server
    forever otherwise. ``after_s`` should be about three of the workers' heartbeat intervals
    (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``) or more: a late heartbeat on a loaded machine must
    not crash a live run. Returns the automation's id.
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
    parameters = region_parameters(flow, spec.region, spec.extra_parameters) if spec.region else {}
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
            heartbeat = get_current_settings().flows.heartbeat_frequency
            warning = zombie_window_warning(zombie_after_s, heartbeat)
            if warning:
                log.warning("%s", warning)
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
