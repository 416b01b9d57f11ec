"""A Prefect progress artifact that long stages update as they go."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

#: Shortest time between two updates of the artifact: each one is an API call (tens of ms),
#: so a stage of many small jobs must not pay one per job.
MIN_INTERVAL_S = 2.0


def progress_artifact(description: str) -> Callable[[int, int], None]:
    """Create a progress artifact at 0 %; the returned ``update(done, total)`` moves it."""
    artifact: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync in a task
        progress=0.0, description=description
    )
    last = {"t": time.monotonic()}

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last["t"] >= MIN_INTERVAL_S or done >= total:
            pct = 100.0 * done / total if total else 100.0
            update_progress_artifact(artifact_id=artifact, progress=pct)
            last["t"] = now

    return update
