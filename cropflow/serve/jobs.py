"""On-demand maps: a request (AOI, dates, model) checked and turned into a region to remap.

The request becomes a region named ``aoi-<key>`` (``key`` a hash of the request) that takes
its imagery source, grid and cube period from ``settings.serve.base_region``; a run of the
deployment ``settings.serve.job_deployment`` (the remap flow: search -> cube -> predict ->
products) maps it, one region lock per AOI hash. Identical requests share one job and its
finished map. Runs are started and read through a :class:`JobBackend` (Prefect's, in
``cropflow.orchestration.map_jobs``), so this module imports no Prefect.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, field_validator

from cropflow.errors import ConfigError
from cropflow.settings import Settings
from cropflow.storage import atomic_write

#: Longest date range of one on-demand map, in days.
MAX_DAYS = 400
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class MapRequest(BaseModel):
    """``POST /maps``: where, when and with which registered model."""

    aoi: dict[str, Any] | list[float] = Field(
        description="GeoJSON geometry, Feature or FeatureCollection (lon/lat), or a bbox "
        "[min_lon, min_lat, max_lon, max_lat]."
    )
    start: date = Field(description="First day of the imagery (the season's start).")
    end: date = Field(description="Last day of the imagery.")
    model: str | None = Field(
        None, description="Registered model name. Unset: the base region's model."
    )
    alias: str = Field("champion", description="Alias (or version number) of that model.")

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", value):
            raise ValueError("an alias is letters, digits, '_' or '-' (e.g. champion)")
        return value

    def key(self) -> str:
        """A hash of the request: identical requests have the same key."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class JobState(BaseModel):
    """Where a run of the job deployment stands."""

    state: str = Field(description="SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED ...")
    state_name: str = ""
    message: str | None = None

    @property
    def final(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class JobBackend(Protocol):
    """Starts and reads runs of the deployment that maps a region."""

    def submit(self, deployment: str, parameters: dict[str, Any]) -> str:
        """Start a run; its id."""
        ...

    def state(self, run_id: str) -> JobState:
        """The run's state."""
        ...


class JobRecord(BaseModel):
    """A job as stored under ``<workdir>/serve/jobs/<id>.json`` (its id is the request key)."""

    id: str
    region: str
    run_id: str
    request: MapRequest


class JobStatus(BaseModel):
    """``GET /maps/jobs/{id}``."""

    id: str
    region: str
    state: str
    state_name: str = ""
    message: str | None = None
    done: bool
    map: str | None = Field(None, description="The map's URL path once it is published.")
    request: MapRequest


def jobs_dir(settings: Settings) -> Path:
    return settings.workdir / "serve" / "jobs"


def read_job(settings: Settings, job_id: str) -> JobRecord | None:
    """The stored job ``job_id`` (a request key), or None."""
    if not JOB_ID.match(job_id):
        return None
    path = jobs_dir(settings) / f"{job_id}.json"
    if not path.is_file():
        return None
    return JobRecord.model_validate_json(path.read_text(encoding="utf-8"))


def write_job(settings: Settings, record: JobRecord) -> None:
    folder = jobs_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{record.id}.json", record.model_dump_json(indent=2))


def all_jobs(settings: Settings) -> list[JobRecord]:
    folder = jobs_dir(settings)
    records = [read_job(settings, p.stem) for p in sorted(folder.glob("*.json"))]
    return [r for r in records if r is not None]


def check_dates(req: MapRequest, today: date | None = None) -> None:
    """Refuse a range that ends before it starts, lies in the future, or is too long."""
    today = today or date.today()
    if req.end <= req.start:
        raise ConfigError(
            f"end ({req.end}) is not after start ({req.start})", hint="give start < end"
        )
    if req.start > today:
        raise ConfigError(f"start ({req.start}) is in the future", hint="map past imagery")
    if (req.end - req.start).days > MAX_DAYS:
        raise ConfigError(
            f"the range {req.start}..{req.end} is longer than {MAX_DAYS} days",
            hint="map one season at a time",
        )


def check_aoi(req: MapRequest, max_km2: float) -> str:
    """The AOI's description; AOIError (invalid) or ConfigError (too large)."""
    from cropflow.stac.aoi import parse_aoi

    aoi = parse_aoi(req.aoi)
    area = aoi.area_km2()
    if area > max_km2:
        raise ConfigError(
            f"the AOI covers {area:,.1f} km², more than the {max_km2:,.1f} km² an on-demand "
            "map may cover",
            hint="draw a smaller AOI (or raise CROPFLOW_SERVE__MAX_AOI_KM2)",
        )
    return aoi.describe()


def check_model(req: MapRequest, settings: Settings) -> str:
    """The registered model's pinned URI; ConfigError when it is not registered or needs
    bands the base region's collection does not have (named)."""
    from cropflow.cube.indices import INDICES
    from cropflow.regions import get_region
    from cropflow.stac.profiles import get_profile
    from cropflow.train.registry import load_model, pin_model

    base = get_region(settings.serve.base_region)
    name = req.model or base.model_name()
    alias = req.alias if not req.alias.isdigit() else f"models:/{name}/{req.alias}"
    pinned = pin_model(alias, name)
    contract = load_model(pinned.uri).contract
    provider = base.provider_ref() or settings.stac.provider
    available = set(base.bands or get_profile(provider).bands) | set(INDICES)
    missing = [b for b in contract.bands if b not in available]
    if missing:
        raise ConfigError(
            f"model {name!r} ({req.alias}) needs band(s) {', '.join(missing)} that collection "
            f"profile {provider!r} of region {base.name!r} does not provide",
            hint="choose a model trained on that collection's bands",
        )
    return pinned.uri


def job_region(req: MapRequest, settings: Settings, aoi_file: Path) -> dict[str, Any]:
    """The region (fields of a region file) that maps the request."""
    from cropflow.regions import get_region

    base = get_region(settings.serve.base_region)
    name = f"aoi-{req.key()}"
    fields = base.model_dump(
        mode="json",
        exclude_defaults=True,
        exclude={"schedule", "labels", "mapping", "split_layer", "reference_sample"},
    )
    fields.update(
        name=name,
        description=f"On-demand map ({req.start}..{req.end}) requested over REST.",
        aoi=str(aoi_file),
        season={"start": req.start.isoformat(), "end": req.end.isoformat()},
        registered_model=req.model or base.model_name(),
        model_alias=req.alias,
    )
    return fields


def write_aoi(req: MapRequest, settings: Settings) -> Path:
    """The request's AOI as a GeoJSON file the job's region names."""
    from cropflow.stac.aoi import parse_aoi

    folder = settings.workdir / "serve" / "aois"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{req.key()}.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": parse_aoi(req.aoi).geojson()}
    atomic_write(path, json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


__all__ = [
    "JobBackend",
    "JobRecord",
    "JobState",
    "JobStatus",
    "MapRequest",
    "all_jobs",
    "check_aoi",
    "check_dates",
    "check_model",
    "job_region",
    "read_job",
    "write_aoi",
    "write_job",
]
