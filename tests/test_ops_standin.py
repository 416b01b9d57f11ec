"""Stand-in ``remap_region`` and ``retrain`` flows for the operations tests.

They have the shape of the real flows (a pydantic parameter model with a ``region``; cached
stage tasks; the remap holds the region lock) but do no real work: every stage appends an
event (what, when, which process) to ``<workdir>/standin/events.jsonl`` so that tests can
count executions and measure overlap. The server tests copy this file into a temporary
project's ``flows/`` and deploy it; the tests below run it in-process.

The map stage waits while ``<workdir>/standin/block`` exists, so that a test can kill a run
in the middle without changing the run's parameters.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from pydantic import BaseModel, ConfigDict, Field

from cropflow.orchestration.caching import stage_task_options
from cropflow.orchestration.locks import region_lock
from cropflow.regions import RegionConfig, as_region
from cropflow.settings import get_settings

#: The longest the map stage waits on the block file.
BLOCK_WAIT_S = 300.0


def standin_dir() -> Path:
    """Where the stand-in flows write their events and look for the block file."""
    return get_settings().workdir.resolve() / "standin"


def log_event(what: str, **fields: Any) -> None:
    """Append one event line (JSON) for the tests to read."""
    folder = standin_dir()
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"what": what, "t": time.time(), "pid": os.getpid(), **fields})
    with (folder / "events.jsonl").open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def read_events() -> list[dict[str, Any]]:
    """Every event logged so far."""
    path = standin_dir() / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class StandinRemapParams(BaseModel):
    """Parameters of the stand-in remap."""

    model_config = ConfigDict(extra="forbid")

    region: RegionConfig | str = Field(..., description="A region name or config.")
    hold_s: float = Field(0.0, ge=0, le=60, description="Seconds to hold the region lock.")


class StandinRetrainParams(BaseModel):
    """Parameters of the stand-in retrain."""

    model_config = ConfigDict(extra="forbid")

    region: RegionConfig | str = Field(..., description="A region name or config.")
    epochs: int = Field(1, ge=1, le=10, description="Training epochs.")


@task(name="standin-search", **stage_task_options())
def search_stage(region: str, datetime_range: str) -> str:
    """Pretend to search; returns a reference."""
    log_event("search", region=region)
    return f"search:{region}:{datetime_range}"


@task(name="standin-cube", **stage_task_options())
def cube_stage(search_ref: str) -> str:
    """Pretend to build a cube."""
    log_event("cube", ref=search_ref)
    return f"cube:{search_ref}"


@task(name="standin-map", **stage_task_options())
def map_stage(cube_ref: str) -> str:
    """Pretend to map; waits while the block file exists."""
    log_event("map-start", ref=cube_ref)
    block = standin_dir() / "block"
    deadline = time.monotonic() + BLOCK_WAIT_S
    while block.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    log_event("map-end", ref=cube_ref)
    return f"map:{cube_ref}"


@flow(name="remap-region")
def remap_region(params: StandinRemapParams) -> str:
    """Stand-in remap: search -> cube -> map under the region lock."""
    region = as_region(params.region)
    log_event("flow-start", region=region.name)
    with region_lock(region.name):
        log_event("lock-acquired", region=region.name)
        ref = map_stage(cube_stage(search_stage(region.name, region.datetime_range())))
        time.sleep(params.hold_s)
        log_event("lock-released", region=region.name)
    log_event("flow-end", region=region.name)
    return ref


@flow(name="retrain")
def retrain(params: StandinRetrainParams) -> str:
    """Stand-in retrain."""
    region = as_region(params.region)
    log_event("train", region=region.name, epochs=params.epochs)
    return f"model:{region.name}:{params.epochs}"


@pytest.fixture(autouse=True)
def _own_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))


def test_standin_remap_caches_stages_in_process(prefect_harness: None) -> None:
    """Run twice in-process (ephemeral API): the second run reuses every stage."""
    region = {
        "name": "inproc",
        "aoi": [13.0, 52.0, 13.1, 52.1],
        "season": {"start": "03-01", "end": "10-31", "year": 2024},
    }
    first = remap_region(StandinRemapParams(region=region))
    second = remap_region(StandinRemapParams(region=region))
    assert first == second
    counts = {w: sum(e["what"] == w for e in read_events()) for w in ("search", "cube", "map-end")}
    assert counts == {"search": 1, "cube": 1, "map-end": 1}
    assert sum(e["what"] == "flow-end" for e in read_events()) == 2
