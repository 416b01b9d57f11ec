"""Helpers of the tests that start stack services (a Prefect server, its worker ...)."""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from cropflow.orchestration import stack
from cropflow.settings import Settings


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open while they are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class ServerStack:
    """Stack services started by a test, under ``settings``."""

    settings: Settings

    def worker(self) -> stack.Service:
        return next(s for s in stack.plan(self.settings) if s.name == "prefect-worker")

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def kill_worker(self) -> int:
        """SIGKILL the worker's process group, as when its machine dies; its pid."""
        (worker,) = stack.status(self.settings, [self.worker()])
        assert worker.pid is not None, "the worker is not running"
        os.killpg(worker.pid, signal.SIGKILL)
        return worker.pid

    def restart_worker(self, old_pid: int, timeout_s: float = 30.0) -> None:
        """Start the worker again once the killed one is gone (stack.up() skips a live pid)."""
        gone_by = time.monotonic() + timeout_s
        while stack.status(self.settings, [self.worker()])[0].running:
            assert time.monotonic() < gone_by, "the killed worker is still running"
            time.sleep(0.1)
        stack.up(self.settings, [self.worker()])
        (restarted,) = stack.status(self.settings, [self.worker()])
        assert restarted.running and restarted.pid != old_pid
