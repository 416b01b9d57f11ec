"""Helpers of the tests that check where servers listen."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil

#: Addresses a server started by cropflow may listen on by default.
LOOPBACK = frozenset({"127.0.0.1", "::1"})


@dataclass(frozen=True)
class Listener:
    """One listening inet socket: where, and which process holds it."""

    ip: str
    port: int
    pid: int
    process: str

    def __str__(self) -> str:
        return f"{self.ip}:{self.port} ({self.process}, pid {self.pid})"


def process_tree(roots: Iterable[int]) -> set[int]:
    """``roots`` and all their living descendants."""
    pids: set[int] = set()
    for root in roots:
        try:
            proc = psutil.Process(root)
            pids.add(root)
            pids.update(child.pid for child in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return pids


def listeners(roots: Iterable[int]) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) of the process trees of ``roots``."""
    pids = process_tree(roots)
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in pids or not conn.laddr:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.NoSuchProcess:
            name = "?"
        found.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return sorted(found, key=lambda item: (item.pid, item.port))


def beyond_loopback(found: Iterable[Listener]) -> list[str]:
    """The listeners that are not on 127.0.0.1 / ::1, as text (empty: all on loopback)."""
    return [str(item) for item in found if item.ip not in LOOPBACK]
