"""Running flows: triggered on the server (validated first), waited for, or run in this
process against a Prefect API that outlives a Ctrl-C (:mod:`cropflow.orchestration.api`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_UI_URL
from pydantic import BaseModel, ConfigDict, Field

from cropflow.errors import ConfigError, CropflowError
from cropflow.redact import install_log_redaction

if TYPE_CHECKING:
    pass

from prefect.settings import PREFECT_API_URL

from cropflow.orchestration.project import (
    ON_DEMAND,
    PROJECT_DIR,
    discover_flows,
    flow_parameters,
    load_flow,
    validate_flow_parameters,
)

log = logging.getLogger(__name__)
# Every flow imports its tasks, and every task module this one: its process logs no credential.
install_log_redaction()


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
    """The current state of a flow run, with its deployment's full name when it has one."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        deployment = None
        if run.deployment_id is not None:
            try:
                dep = client.read_deployment(run.deployment_id)
                deployment = f"{client.read_flow(dep.flow_id).name}/{dep.name}"
            except ObjectNotFound:  # deleted since the run was created
                deployment = None
    return _run_info(run, deployment)


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
    from cropflow.orchestration.api import prefect_api

    with prefect_api():
        return flow(**validated)


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
