"""The project's flows: found without importing them, loaded, and their parameters checked
(pydantic models; no credential in a parameter) before a run is created."""

from __future__ import annotations

import ast
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from prefect import Flow
from prefect.exceptions import ParameterTypeError
from pydantic import BaseModel, ValidationError

from cropflow.errors import ConfigError
from cropflow.redact import find_credentials
from cropflow.regions import RegionConfig, get_region

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


#: The project whose ``flows/`` are deployed (the worker's working directory).
PROJECT_DIR = Path(__file__).resolve().parents[2]
#: Name of the on-demand deployment of every flow.
ON_DEMAND = "on-demand"


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


def _is_project_region(region: RegionConfig) -> bool:
    """True when the region's name loads this very config from the project's regions folder."""
    try:
        return get_region(region.name) == region
    except ConfigError:
        return False


def region_parameters(
    flow: Flow[..., Any], region: RegionConfig, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters that run ``flow`` (remap or retrain) on ``region``.

    A region of the project's regions folder is given by name: the run form shows the name
    (not the whole config), and the run reads the file where it runs (the flows publish the
    config they used). A region from another folder is embedded whole, since the worker may
    not see that folder. A flow that takes only a region name gets the name.
    """
    embedded = region.model_dump(mode="json", exclude_defaults=True)
    ref: str | dict[str, Any] = region.name if _is_project_region(region) else embedded
    single = _single_model_parameter(flow)
    candidates: list[dict[str, Any]]
    more = dict(extra or {})
    if single and "region" in single[1].model_fields:
        candidates = [
            {single[0]: {"region": ref, **more}},
            {single[0]: {"region": region.name, **more}},
        ]
    elif "region" in inspect.signature(flow.fn).parameters:
        candidates = [{"region": ref, **more}, {"region": region.name, **more}]
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
