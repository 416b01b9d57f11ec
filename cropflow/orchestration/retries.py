"""Retries of network stages: transient errors only, with backoff and jitter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from cropflow.errors import CropflowError, EmptySearchError, StacError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


#: Task-level retries of network stages (on top of the HTTP retries of settings.stac).
NETWORK_RETRIES = 3
#: First task-level retry delay; doubles per retry (10, 20, 40 s).
NETWORK_BACKOFF_S = 10.0
#: Jitter of task retry delays (fraction of the delay).
NETWORK_RETRY_JITTER = 0.5


def _exception_of(state: State) -> BaseException | None:
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # a result that cannot be read: treat as transient
        return exc
    return result if isinstance(result, BaseException) else None


def retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry a failed network stage unless the user must fix something first.

    CropflowErrors are the user's to fix (bad parameters, empty search) and are not retried,
    except StacError (API unreachable or answering errors), which is transient, unless it says
    it is not (``retryable = False``: a search that used up its HTTP retries or its deadline,
    which a task-level retry would only multiply).
    """
    exc = _exception_of(state)
    if isinstance(exc, EmptySearchError):
        return False
    if isinstance(exc, StacError):
        return bool(getattr(exc, "retryable", True))
    return not isinstance(exc, CropflowError)


def network_retry_options(
    retries: int = NETWORK_RETRIES, backoff_s: float = NETWORK_BACKOFF_S
) -> dict[str, Any]:
    """Keyword arguments for ``@task`` of a network stage (STAC search)::

        @task(name="stac-search", **network_retry_options(), **stage_task_options())

    Delays double from ``backoff_s`` with jitter; only transient failures are retried
    (:func:`retry_on_transient`).
    """
    return {
        "retries": retries,
        "retry_delay_seconds": [backoff_s * 2**i for i in range(retries)],
        "retry_jitter_factor": NETWORK_RETRY_JITTER,
        "retry_condition_fn": retry_on_transient,
    }


def crash_retry_options(retries: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``@task`` of a resumable stage (prediction): retried at once
    after a crash or an I/O failure (the retry resumes), never after a user error."""
    return {"retries": retries, "retry_condition_fn": retry_on_transient}
