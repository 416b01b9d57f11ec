"""The ``cropflow`` command line: each subcommand runs one flow (or a helper) in-process.

Options come from the flows' pydantic parameter models, so defaults live in one place.
Errors that the user can fix are printed as one line and exit with status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, Field
from rich.console import Console

from cropflow.chain import DemoParams
from cropflow.cli_params import params_command
from cropflow.cube import CubeParams
from cropflow.errors import ConfigError, CropflowError
from cropflow.labels import TrainingSetParams
from cropflow.orchestration import stack
from cropflow.orchestration.api import prefect_api
from cropflow.predict import PredictParams
from cropflow.products.area_params import AreaEstimateParams, SampleDesignParams
from cropflow.redact import find_credentials, install_log_redaction
from cropflow.settings import get_settings
from cropflow.stac.params import SearchParams
from cropflow.train import TrainParams
from cropflow.train.params import CrossValParams

app = typer.Typer(
    name="cropflow",
    help="Crop-type, cropland and land-cover maps from satellite image time series.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
install_log_redaction()  # nothing this process logs shows a credential
# Offline by default: no telemetry attempts (Prefect, MLflow); cropflow's own log lines (epoch
# lines, cube progress) shown with the flow runs' logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "cropflow")  # to the runs' logs in the UI
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # not a line per worker event


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record: a redirect (a test runner, a
    wrapper) may replace it, and a handler bound to a closed stream would print the raw,
    unredacted record in its error report."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def console_logging() -> None:
    """cropflow's own INFO lines (epochs, cube progress, warnings) on stderr, as Prefect's."""
    logger = logging.getLogger("cropflow")
    if any(getattr(h, "_cropflow_console", False) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                          datefmt="%H:%M:%S")
    )  # fmt: skip
    handler._cropflow_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if _debug() else logging.INFO)
    logger.propagate = False  # the root's console handler would print warnings twice
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _debug() -> bool:
    return os.environ.get("CROPFLOW_DEBUG", "").strip().lower() in ("1", "true", "yes")


def quiet_known_errors() -> None:
    """Log records of errors the user can fix (CropflowError) and of interrupts carry no
    traceback (Prefect logs one for every failed task and flow run): the command prints one
    line instead. ``--debug`` / ``CROPFLOW_DEBUG=1`` keeps them."""
    if _debug():
        return
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_cropflow_quiet", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CropflowError | KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return record

    factory._cropflow_quiet = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (also CROPFLOW_DEBUG=1).")
    ] = False,
) -> None:
    """Crop-type, cropland and land-cover maps from satellite image time series."""
    if debug:
        os.environ["CROPFLOW_DEBUG"] = "1"
    quiet_known_errors()
    console_logging()


F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def no_credentials(run: Callable[[M], None]) -> Callable[[M], None]:
    """``run`` refusing parameters that hold a credential: a stage's parameters become its
    Prefect flow run's, stored in Prefect's database (credentials go in settings)."""

    @wraps(run)
    def guarded(params: M) -> None:
        found = list(find_credentials(params))
        if found:
            raise ConfigError(
                f"option(s) {', '.join(found)} hold a credential (user:token@ or a token/"
                "signature in the query string); Prefect would store it with the run",
                hint="put it in a setting instead (CROPFLOW_STAC__API_URL, "
                "CROPFLOW_MLFLOW__TRACKING_URI)",
            )
        run(params)

    return guarded


def _fail(exc: CropflowError) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    sys.exit(2)


def friendly_errors(func: F) -> F:
    """Print a CropflowError (or a full disk, read-only folder, denied write) as one line
    (what was wrong, how to fix it) and exit 2; Ctrl-C or SIGTERM: one line, exit 130."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cropflow.orchestration.api import interruptible
        from cropflow.storage import storage_error

        try:
            with interruptible():
                return func(*args, **kwargs)
        except CropflowError as exc:
            if _debug():
                console.print_exception()
            _fail(exc)
        except KeyboardInterrupt:
            console.print("[bold yellow]interrupted[/]: the run was stopped", highlight=False)
            sys.exit(130)
        except Exception as exc:
            translated = storage_error(exc, get_settings().workdir, "running the command")
            if translated is None:
                raise
            _fail(translated)

    return wrapper  # type: ignore[return-value]


stac_app = typer.Typer(help="The local STAC API.", no_args_is_help=True)
stack_app = typer.Typer(help="The one-machine service stack (processes on 127.0.0.1).")
profiles_app = typer.Typer(
    help="Collection profiles: how a collection's assets become named bands (docs/DATA.md).",
    no_args_is_help=True,
)
app.add_typer(stac_app, name="stac")
app.add_typer(stack_app, name="stack")
app.add_typer(profiles_app, name="profiles")


def _run_demo(params: DemoParams) -> None:
    from flows.demo import demo

    with prefect_api():
        summary = demo(params)
    console.print("[bold green]demo finished[/]; outputs:")
    typer.echo(summary.to_text())


def _run_search(params: SearchParams) -> None:
    from cropflow.stac.search import resolve
    from flows.search import search_flow

    resolve(params)  # bad parameters fail here, before Prefect starts
    with prefect_api():
        result = search_flow(params)
    typer.echo(result.summary.to_markdown())
    typer.echo(f"items: {result.uri}")


params_command(
    app,
    "demo",
    DemoParams,
    no_credentials(_run_demo),
    "The main job on the embedded default: generate the demo region, serve it over a local "
    "STAC API, search, build the cube, join labels, train and register a model, map.",
    wrap=friendly_errors,
)
params_command(
    app,
    "search",
    SearchParams,
    no_credentials(_run_search),
    "Search a STAC API (default: the bundled demo catalog) and save the items.",
    wrap=friendly_errors,
)


class CubeRequest(BaseModel):
    """The build-cube flow's arguments, as one model for the command line."""

    search: str = Field(description="The saved search (SearchResult.uri, an items.json).")
    provider: str | None = Field(
        None,
        description="Collection profile of the items, a name or a YAML path (unset: the one "
        "saved with the search).",
    )
    out: str | None = Field(None, description="Zarr path (unset: <workdir>/cubes/<key>.zarr).")
    cube: CubeParams = Field(default_factory=CubeParams, description="Datacube options (JSON).")


def _run_cube(req: CubeRequest) -> None:
    from flows.cube import run_build_cube

    with prefect_api():
        ref = run_build_cube(req.search, req.provider, req.cube, req.out)
    typer.echo(ref.to_markdown())
    typer.echo(f"cube: {ref.uri}")


def _run_training_set(params: TrainingSetParams) -> None:
    from flows.training_set import build_training_set_flow

    with prefect_api():
        summary = build_training_set_flow(params)
    typer.echo(summary.markdown())
    typer.echo(f"training set: {summary.uri}")


def _run_train(params: TrainParams) -> None:
    from flows.train import train_flow

    with prefect_api():
        outcome = train_flow(params)
    typer.echo(outcome.to_markdown())


def _run_evaluate(params: CrossValParams) -> None:
    from flows.train import cross_validate_flow

    with prefect_api():
        result = cross_validate_flow(params)
    typer.echo(result.to_markdown())


def _run_predict(params: PredictParams) -> None:
    from cropflow.predict.command import run_predict

    with prefect_api():
        run_predict(params)


params_command(
    app,
    "cube",
    CubeRequest,
    no_credentials(_run_cube),
    "Build the analysis-ready Zarr datacube of a saved search.",
    wrap=friendly_errors,
)
params_command(
    app,
    "training-set",
    TrainingSetParams,
    no_credentials(_run_training_set),
    "Join labels to a cube and write a leak-free training set.",
    wrap=friendly_errors,
)
params_command(
    app,
    "train",
    TrainParams,
    no_credentials(_run_train),
    "Train a model (a line per epoch), log it to MLflow and register it.",
    wrap=friendly_errors,
)
params_command(
    app,
    "evaluate",
    CrossValParams,
    no_credentials(_run_evaluate),
    "Spatial k-fold cross-validation (--folds k): each score's mean and spread over folds of "
    "whole fields or blocks, one MLflow run per fold.",
    wrap=friendly_errors,
)
params_command(
    app,
    "predict",
    PredictParams,
    no_credentials(_run_predict),
    "Map a cube with a registered model and publish the map products.",
    wrap=friendly_errors,
)


def _run_sample_design(params: SampleDesignParams) -> None:
    from flows.accuracy import sample_design_flow

    with prefect_api():
        result = sample_design_flow(params)
    typer.echo(result.markdown())


def _run_area_estimate(params: AreaEstimateParams) -> None:
    from flows.accuracy import area_estimate_flow

    with prefect_api():
        result = area_estimate_flow(params)
    typer.echo(result.markdown())


params_command(
    app,
    "sample-design",
    SampleDesignParams,
    no_credentials(_run_sample_design),
    "Draw a stratified random sample of a class map for reference labelling (GeoPackage and "
    "CSV with an empty label column; the map class hidden from labellers).",
    wrap=friendly_errors,
)
params_command(
    app,
    "area-estimate",
    AreaEstimateParams,
    no_credentials(_run_area_estimate),
    "Estimate class areas with standard errors and confidence intervals, and the map's "
    "accuracies, from a labelled sample (Olofsson et al. 2014): class_area_estimate.*.",
    wrap=friendly_errors,
)


@stac_app.command("serve")
@friendly_errors
def stac_serve(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A catalog.json/collection.json (links followed), an ItemCollection, an "
            ".ndjson/.jsonl file, a JSON list of items, one item, a file:// URI, or a folder "
            "(its catalog.json, or collection.json + items.json). Default: the demo's catalog.",
            metavar="SOURCE",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: settings.stack.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: settings.stack.stac_port).")
    ] = None,
    default_collection: Annotated[
        str, typer.Option(help="Collection id for items that name none.")
    ] = "items",
) -> None:
    """Serve a local STAC catalog as a STAC API (rustac) until Ctrl-C or SIGTERM."""
    from cropflow.errors import DataError
    from cropflow.stac.server import serve_source

    demo = get_settings().demo_dir / "stac"
    if source is None and not demo.is_dir():
        raise DataError(
            f"no SOURCE given and the demo catalog {str(demo)!r} does not exist",
            hint="give a SOURCE, or generate the demo region first (`cropflow demo`)",
        )
    serve_source(
        source or demo,
        host=host,
        port=port,
        default_collection=default_collection,
    )


@profiles_app.command("list")
@friendly_errors
def profiles_list() -> None:
    """The known profiles: name, the collections they map, what they read."""
    from cropflow.stac.profiles import get_profile, profile_names

    for name in profile_names():
        profile = get_profile(name)
        print(f"{name:<36} {', '.join(profile.collections):<40} {profile.description}")


@profiles_app.command("show")
@friendly_errors
def profiles_show(
    profile: Annotated[str, typer.Argument(help="A profile name or the path of a profile YAML.")],
) -> None:
    """A profile as cropflow reads it (with `extends` resolved and defaults applied), as YAML."""
    import yaml

    from cropflow.stac.profiles import get_profile

    found = get_profile(profile)
    data = found.model_dump(mode="json", exclude_none=True, exclude={"bands", "defaults"})
    data["bands"] = {
        b: found.spec(b).model_dump(mode="json", exclude_none=True) for b in found.bands
    }
    data["cube_bands"] = found.cube_bands()
    print(yaml.safe_dump(data, sort_keys=False), end="")


def _print_status(rows: list[stack.ServiceStatus]) -> None:
    """One line per service (greppable): name, state, pid, URL, log."""
    out = Console(soft_wrap=True, highlight=False)
    width = max(len(r.name) for r in rows)
    for r in rows:
        state = "healthy" if r.healthy else ("running" if r.running else "stopped")
        colour = {"healthy": "green", "running": "yellow", "stopped": "red"}[state]
        out.print(
            f"{r.name:<{width}}  [{colour}]{state:<7}[/]  pid {r.pid or '-':<7}  {r.url}"
            f"  (log: {r.log})"
        )


@app.command("serve")
@friendly_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: settings.stack.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: settings.serve.port).")
    ] = None,
) -> None:
    """Serve the published maps: REST API and tiles, on-demand maps, the web map at /."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL

    from cropflow.serve.app import create_app

    settings = get_settings()
    jobs = None
    if PREFECT_API_URL.value():  # on-demand maps run on the server's workers
        from cropflow.orchestration.map_jobs import PrefectJobs

        jobs = PrefectJobs()
    where = (host or settings.stack.host, port or settings.serve.port)
    typer.echo(f"cropflow maps on http://{where[0]}:{where[1]} (API docs at /docs)", err=True)
    uvicorn.run(create_app(settings, jobs), host=where[0], port=where[1], log_level="warning")


@stack_app.command("up")
@friendly_errors
def stack_up() -> None:
    """Start the stack (Prefect server + worker, MLflow, Dask, STAC API, map server) and print
    its URLs."""
    _print_status(stack.up(get_settings()))


@stack_app.command("status")
@friendly_errors
def stack_status() -> None:
    """Show whether each service of the stack runs and answers its health check."""
    rows = stack.status(get_settings())
    _print_status(rows)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@stack_app.command("down")
@friendly_errors
def stack_down() -> None:
    """Stop every service of the stack (whole process groups)."""
    stopped = stack.down(get_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _key_values(pairs: list[str], params_file: Path | None) -> dict[str, Any]:
    """``--params FILE`` then ``key=value`` pairs (values parsed as YAML: numbers, lists...);
    a dotted key sets a nested field: ``train.epochs=5`` is ``{"train": {"epochs": 5}}``."""
    import yaml

    from cropflow.cli_params import load_params_file

    data: dict[str, Any] = load_params_file(params_file) if params_file else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(
                f"parameter {pair!r} is not key=value", hint="e.g. region=demo train.epochs=5"
            )
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"parameter {pair!r}: {part!r} is already set to a value, not fields",
                    hint="set either the whole value or its fields",
                )
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return data


ParamPairs = Annotated[
    list[str] | None, typer.Argument(help="Parameters as key=value (YAML values).")
]
ParamsFile = Annotated[Path | None, typer.Option("--params", help="YAML/JSON file of parameters.")]


@app.command()
@friendly_errors
def deploy(
    regions: Annotated[
        Path | None, typer.Option(help="Folder of region files (default: deployments/regions).")
    ] = None,
    work_pool: Annotated[
        str | None,
        typer.Option(help="Work pool (default: the stack's process pool, created if missing)."),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Image of the flow runs (Docker/Kubernetes pools).")
    ] = None,
    worker_project_dir: Annotated[
        str | None,
        typer.Option(help="Where the project is on the worker (in its image: /opt/cropflow)."),
    ] = None,
) -> None:
    """Apply every deployment (scheduled remap per region, retrain, on-demand stages)."""
    from cropflow.orchestration import deploy as ops
    from cropflow.regions import REGIONS_DIR

    infos = ops.deploy_all(
        regions or REGIONS_DIR,
        work_pool=work_pool,
        job_variables={"image": image} if image else None,
        worker_project_dir=worker_project_dir,
    )
    for info in infos:
        typer.echo(info.model_dump_json())


@app.command()
@friendly_errors
def trigger(
    deployment: Annotated[str, typer.Argument(help="flow/deployment, or a flow's name.")],
    params: ParamPairs = None,
    params_file: ParamsFile = None,
    wait: Annotated[bool, typer.Option(help="Wait until the run ends.")] = False,
) -> None:
    """Start a deployment's run on the Prefect server (PREFECT_API_URL)."""
    from cropflow.orchestration import runs as ops

    info = ops.trigger(deployment, _key_values(params or [], params_file))
    typer.echo(info.model_dump_json())
    if wait:
        final = ops.wait_for_run(info.id)
        typer.echo(final.model_dump_json())
        if final.state != "COMPLETED":
            raise typer.Exit(1)


@app.command("run")
@friendly_errors
def run_flow(
    flow: Annotated[str, typer.Argument(help="Flow name (see `cropflow deploy`).")],
    params: ParamPairs = None,
    params_file: ParamsFile = None,
) -> None:
    """Run a flow ad hoc in this process (Prefect's ephemeral API unless PREFECT_API_URL)."""
    from cropflow.orchestration import runs as ops

    result = ops.run_flow(flow, _key_values(params or [], params_file))
    typer.echo(result.model_dump_json() if hasattr(result, "model_dump_json") else repr(result))


@app.command()
def version() -> None:
    """Print cropflow's version."""
    from cropflow import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry point
    app()
