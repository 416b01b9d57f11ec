"""Settings: the one typed home of every machine-level default.

Everything here can be set from the environment with the ``CROPFLOW_`` prefix, nested fields
with a double underscore, e.g.::

    CROPFLOW_WORKDIR=/data/cropflow
    CROPFLOW_STAC__API_URL=https://earth-search.aws.element84.com/v1
    CROPFLOW_STAC__PROVIDER=earth-search-v1
    CROPFLOW_DASK__ADDRESS=tcp://scheduler:8786
    CROPFLOW_MLFLOW__TRACKING_URI=http://mlflow:5000

Prefect's own settings (``PREFECT_API_URL`` ...) are Prefect's: cropflow does not copy them.
Per-run choices (AOI, dates, model hyper-parameters) are flow parameters, not settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StacSettings(BaseModel):
    """Where imagery is searched and how hard to try."""

    api_url: str | None = Field(
        None,
        description="STAC API root URL. Unset: the bundled demo catalog, served on 127.0.0.1.",
    )
    provider: str = Field(
        "local-demo",
        description="Collection profile mapping the items' assets, scale/offset and cloud mask "
        "to named bands: a built-in name (local-demo, earth-search-v1, earth-search-v0, "
        "planetary-computer, planetary-computer-landsat, ...; `cropflow profiles` lists them), "
        "a name in profiles_dir, or the path of a profile YAML file (docs/DATA.md).",
    )
    profiles_dir: Path | None = Field(
        None,
        description="A folder of your own collection profiles (<name>.yaml), found by name "
        "before the built-in ones.",
    )
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request.")
    max_retries: int = Field(
        4,
        ge=0,
        description="Retries of one HTTP request on 429/5xx, connection errors and timeouts: "
        "at most max_retries + 1 attempts per request (each page, the root, the collections).",
    )
    backoff_s: float = Field(1.0, ge=0, description="First back-off delay; doubles per retry.")
    page_size: int = Field(100, gt=0, le=1000, description="Items per search page.")
    deadline_s: float = Field(
        120.0,
        gt=0,
        description="Total time one search may take, all requests, retries, back-offs and "
        "pages together; past it the search fails, saying how many requests it made.",
    )
    max_aoi_km2: float = Field(
        250_000.0,
        gt=0,
        description="Largest AOI (geodesic area, km²) searched on a remote STAC API; a larger "
        "one is refused before any request. Raise it to search a larger area on purpose.",
    )
    max_items: int = Field(
        5_000,
        gt=0,
        description="Most items one search may return (unless the search's own max_items "
        "caps it); a search matching more stops with a message saying how to narrow it.",
    )


class DaskSettings(BaseModel):
    """The Dask cluster: a LocalCluster unless an address is given."""

    address: str | None = Field(None, description="Scheduler address of an existing cluster.")
    n_workers: int = Field(2, ge=1, description="LocalCluster workers.")
    threads_per_worker: int = Field(1, ge=1, description="LocalCluster threads per worker.")
    memory_limit: str = Field("4GiB", description="LocalCluster memory limit per worker.")


class MlflowSettings(BaseModel):
    """Experiment tracking and the model registry."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI. Unset: a SQLite store under the workdir."
    )
    experiment: str = Field("cropflow", description="MLflow experiment name.")
    registered_model: str = Field("cropflow-crop-type", description="Registered model name.")


class StackSettings(BaseModel):
    """Ports of the one-machine service stack (all bound to 127.0.0.1)."""

    host: str = Field(
        "127.0.0.1",
        description="The one address every server cropflow starts listens on: the stack's "
        "Prefect server (and worker webserver), MLflow, Dask scheduler, workers and their "
        "HTTP servers, the STAC API, and the Dask LocalCluster of cube builds. Loopback by "
        "default; set an interface address (never 0.0.0.0 unless behind a firewall) to serve "
        "other machines.",
    )
    prefect_port: int = 4200
    mlflow_port: int = 5000
    dask_port: int = 8786
    dask_dashboard_port: int = 8787
    stac_port: int = 8082
    dask_workers: int = Field(2, ge=1, description="Dask worker processes the stack starts.")
    dask_threads: int = Field(1, ge=1, description="Threads per stack Dask worker.")
    dask_memory_limit: str = Field("4GiB", description="Memory limit per stack Dask worker.")
    work_pool: str = Field("cropflow-process", description="Prefect process work pool name.")
    start_timeout_s: float = Field(120.0, gt=0, description="Wait for a service to be healthy.")


class ServeSettings(BaseModel):
    """The map server (``cropflow serve``): published maps, tiles, on-demand map jobs."""

    port: int = Field(8090, description="Port of `cropflow serve` (on settings.stack.host).")
    token: SecretStr | None = Field(
        None,
        description="Bearer token that POST /maps needs (compared in constant time). Unset: "
        "on-demand map jobs are refused; reading maps and tiles needs no token.",
    )
    max_aoi_km2: float = Field(
        100.0, gt=0, description="Largest AOI (geodesic area, km²) of an on-demand map."
    )
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body (a GeoJSON AOI) accepted."
    )
    max_active_jobs: int = Field(
        2, ge=1, description="On-demand map jobs scheduled or running at once; more get 429."
    )
    job_deployment: str = Field(
        "remap-region/on-demand",
        description="Deployment that runs on-demand maps (search -> cube -> predict -> "
        "products of a region made from the request).",
    )
    base_region: str = Field(
        "demo",
        description="Region file an on-demand map takes its imagery source, grid and model "
        "from (provider, API, collections, bands, resolution, registered model).",
    )


class Settings(BaseSettings):
    """All cropflow settings; see the module docstring for the environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CROPFLOW_", env_nested_delimiter="__", extra="ignore"
    )

    workdir: Path = Field(
        Path("cropflow-work"),
        description="Where searches, cubes, training sets, models and products are written.",
    )
    stac: StacSettings = StacSettings()
    dask: DaskSettings = DaskSettings()
    mlflow: MlflowSettings = MlflowSettings()
    stack: StackSettings = StackSettings()
    serve: ServeSettings = ServeSettings()

    @property
    def demo_dir(self) -> Path:
        """Where the bundled demo region is generated."""
        return self.workdir / "demo"

    @property
    def mlflow_dir(self) -> Path:
        """The embedded MLflow store (SQLite database and artifacts)."""
        return self.workdir / "mlflow"

    @property
    def products_dir(self) -> Path:
        """Where map products are published, one folder per region."""
        return self.workdir / "products"

    @property
    def stack_dir(self) -> Path:
        """Logs and pid files of the one-machine service stack."""
        return self.workdir / "stack"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The configured tracking URI, or the embedded SQLite store."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        db = (self.mlflow_dir / "mlflow.db").resolve()
        return f"sqlite:///{db}"


def get_settings() -> Settings:
    """Read the settings from the environment (cheap; not cached so tests can change env)."""
    return Settings()
