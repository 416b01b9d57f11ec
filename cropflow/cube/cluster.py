"""The Dask cluster cube builds (and other heavy steps) run on.

``dask_client()`` gives, in this order: a client of the cluster this code already runs on (a
Dask worker, e.g. a Prefect task under ``DaskTaskRunner``: the calling thread secedes so that
it does not hold a worker slot while it waits), the process's default client, a client of
``settings.dask.address``, or a new LocalCluster sized by ``settings.dask``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.config
from distributed import Client, LocalCluster, default_client, get_worker, worker_client

from cropflow.errors import ConfigError
from cropflow.redact import DASK_PRELOAD
from cropflow.settings import DaskSettings, get_settings

log = logging.getLogger(__name__)


def local_cluster_kwargs(settings: DaskSettings, host: str | None = None) -> dict[str, Any]:
    """LocalCluster arguments from the settings.

    Every server of the cluster listens on ``host`` only (default ``settings.stack.host``,
    127.0.0.1): the scheduler, the workers and nannies, and their HTTP servers. Distributed
    binds an HTTP address given as ``":0"`` to 0.0.0.0, so the scheduler's dashboard gets
    ``host:0`` (a free port: 8787 belongs to the service stack's dashboard); the workers' HTTP
    servers (``/health``, ``/metrics``) follow their own listen host when no address is given.
    Worker processes preload :mod:`cropflow.redact` so that their logs are redacted too.
    """
    bind = host or get_settings().stack.host
    return {
        "n_workers": settings.n_workers,
        "threads_per_worker": settings.threads_per_worker,
        "memory_limit": settings.memory_limit,
        "processes": True,
        "host": bind,
        "dashboard_address": f"{bind}:0",
        "worker_dashboard_address": None,
        "preload": [DASK_PRELOAD],
    }


#: Environment variable that Dask sets for its worker processes and cropflow's clusters drop.
#: Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` to hand freed memory back to the OS early; glibc
#: then stops adapting its mmap threshold, every large array (a block task allocates and frees
#: many of 4-50 MB) becomes a fresh mmap, and page faults made block tasks about 2x slower
#: (benchmarks/bench_cube.py; high system time). Peak memory stays bounded by the blocks.
DROPPED_WORKER_ENV = "MALLOC_TRIM_THRESHOLD_"


def make_local_cluster(**kwargs: Any) -> LocalCluster:
    """A LocalCluster whose worker processes keep glibc's adaptive malloc (see above)."""
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.pop(DROPPED_WORKER_ENV, None)
    os.environ.pop(DROPPED_WORKER_ENV, None)  # a previous Nanny may have set it here
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        return LocalCluster(**kwargs)


def _on_worker() -> bool:
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _existing_client() -> Client | None:
    try:
        result: Client | None = default_client()
        return result
    except ValueError:
        return None


@contextmanager
def dask_client(settings: DaskSettings | None = None) -> Iterator[Client]:
    """A Dask client for the duration of the block (see the module docstring)."""
    if _on_worker():
        with worker_client() as client:
            yield client
        return
    existing = _existing_client()
    if existing is not None:
        yield existing
        return
    s = settings or get_settings().dask
    if s.address:
        try:
            client = Client(s.address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {s.address!r}: {exc}",
                hint="start it, or unset CROPFLOW_DASK__ADDRESS to use a local cluster",
            ) from None
        with client:
            yield client
        return
    log.info("starting a LocalCluster: %s", local_cluster_kwargs(s))
    with make_local_cluster(**local_cluster_kwargs(s)) as cluster, Client(cluster) as client:
        yield client
