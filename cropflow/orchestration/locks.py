"""Region locks: two remaps of one region never run at once (the server's concurrency limit
with a lease, or a file lock under the workdir on the ephemeral API)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from cropflow.errors import CropflowError
from cropflow.settings import Settings, get_settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


#: Global concurrency limit of a region is ``remap-<region>`` with one slot.
REGION_LOCK_PREFIX = "remap-"
#: Lease of a held region lock, renewed while the run lives. A killed run's lock frees itself
#: this long after its last renewal (60 s is the shortest lease the Prefect server accepts).
REGION_LOCK_LEASE_S = 60.0


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
