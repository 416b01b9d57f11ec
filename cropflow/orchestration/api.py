"""The Prefect API a command's flow runs report to, and clean stops of those runs.

:func:`prefect_api` picks, in order:

1. ``PREFECT_API_URL`` when it is set (a Prefect server somewhere);
2. the Prefect server of ``cropflow stack up`` when its pid file names a live process and it
   answers (no start-up cost: runs show in the stack's UI);
3. a temporary local server, like Prefect's ephemeral API, but started **in its own process
   session** (Ctrl-C in a terminal reaches the run, not the API, which stays up to record the
   run as crashed), dying with this process even on SIGKILL (Linux parent-death signal), with
   the start-up timeout of ``settings.stack.start_timeout_s`` and an error that explains a
   timeout. Prefect's own ephemeral server shares the terminal's process group: a Ctrl-C
   killed it first and the run then retried for minutes against a dead API.

:func:`interruptible` turns SIGTERM into the same KeyboardInterrupt as Ctrl-C, so a run is
stopped the same way by either.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from cropflow.errors import ConfigError
from cropflow.settings import Settings, get_settings

_PR_SET_PDEATHSIG = 1


def _stack_api(settings: Settings) -> str | None:
    """The stack's Prefect API URL when its server is running and healthy, else None."""
    from cropflow.orchestration import stack

    server = next((s for s in stack.status(settings) if s.name == "prefect-server"), None)
    if server is None or not server.healthy:
        return None
    return f"http://{settings.stack.host}:{settings.stack.prefect_port}/api"


def _die_with_parent() -> Any:
    """A ``preexec_fn`` giving the child SIGTERM when this process dies (Linux; libc's prctl
    looked up before the fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


def _server_class() -> Any:
    """Prefect's subprocess API server, started in its own session."""
    from prefect.server.api.server import SubprocessASGIServer

    class SessionASGIServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            real = subprocess.Popen

            def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
                kwargs.setdefault("start_new_session", True)
                kwargs.setdefault("preexec_fn", _die_with_parent())
                return real(*args, **kwargs)

            subprocess.Popen = popen  # type: ignore[assignment,misc]
            try:
                proc: subprocess.Popen[Any] = super()._run_uvicorn_command()
            finally:
                subprocess.Popen = real  # type: ignore[misc]
            return proc

    return SessionASGIServer


def _start_local(timeout_s: float) -> Any:
    server = _server_class()()
    try:
        server.start(timeout=max(1, round(timeout_s)))
    except Exception as exc:
        server.stop()
        raise ConfigError(
            f"the local Prefect API did not start within {timeout_s:g} s ({exc})",
            hint="the machine may be busy: raise CROPFLOW_STACK__START_TIMEOUT_S, or run "
            "`cropflow stack up` once and let commands use its server, or set PREFECT_API_URL",
        ) from None
    return server


def _flush_run_logs() -> None:
    """Send the run logs still queued to the API while it still runs: sent after a temporary
    API stopped, they end the command with 'Error logging to API'."""
    from prefect.logging.handlers import APILogHandler

    try:
        APILogHandler().flush()
    except Exception as exc:  # a log that cannot be sent must not fail the command
        logging.getLogger(__name__).debug("run logs not flushed: %s", exc)


@contextmanager
def prefect_api(settings: Settings | None = None) -> Iterator[str]:
    """Run the block against a Prefect API (see the module docstring); yields its URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = settings or get_settings()
    given = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if given:
        yield str(given)
        return
    stack_url = _stack_api(settings)
    server = None if stack_url is not None else _start_local(settings.stack.start_timeout_s)
    url = str(server.api_url) if server is not None else str(stack_url)
    os.environ["PREFECT_API_URL"] = url  # for processes this one starts (Dask workers)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_run_logs()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if server is not None:
            server.stop()


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGTERM (SIGINT raises a plain KeyboardInterrupt)."""


@contextmanager
def interruptible() -> Iterator[None]:
    """While inside (main thread only), SIGTERM raises :class:`Interrupted` as Ctrl-C raises
    KeyboardInterrupt: a flow run in progress is then marked crashed and its resources
    (Dask cluster, temporary API) are closed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop; the clean-up finishes
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
