"""Stage caching: a stage task's result is reused by a rerun with the same inputs, task code,
settings and input files (while the outputs it names exist and it is not degraded)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from cropflow import __version__
from cropflow.redact import install_log_redaction
from cropflow.settings import Settings, get_settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
# Every flow imports its tasks, and every task module this one: its process logs no credential.
install_log_redaction()

P = ParamSpec("P")
R = TypeVar("R")


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
    from prefect._internal.result_records import ResultRecord

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
