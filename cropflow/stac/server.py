"""A real local STAC API: ``rustac serve`` over one collection file and one items file.

Used for the offline demo (the embedded default) and by the tests::

    with LocalStacServer(stac_dir / "collection.json", stac_dir / "items.json") as server:
        client = pystac_client.Client.open(server.url)

Any other local source (a static catalog, an ItemCollection, ndjson, a list of items, one
item; see :mod:`cropflow.stac.catalog`) is served with ``LocalStacServer.from_source(path)``.

On Linux the rustac child gets SIGTERM when the process that started it dies, even by
SIGKILL (``PR_SET_PDEATHSIG``); it runs in its own session so that a terminal's Ctrl-C goes to
Python, which stops it. :func:`serve` and :func:`serve_source` turn SIGTERM into the same
clean stop as Ctrl-C.

The server keeps everything in memory (rustac's memory backend): search, paging, bbox,
intersects, datetime and collections work; CQL2 ``filter``, ``query`` and ``sortby`` are not
supported by rustac 0.9.18 (it advertises no such conformance class).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

import httpx

from cropflow.errors import DataError, StacError
from cropflow.settings import get_settings
from cropflow.stac.catalog import LocalCatalog, read_stac_source, write_server_files

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3
_POLL_S = 0.05
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def find_rustac() -> str:
    """The ``rustac`` executable: beside the running Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "rustac"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rustac")
    if found:
        return found
    raise StacError(
        "the `rustac` executable was found neither beside Python nor on PATH",
        hint="pip install rustac (cropflow depends on it)",
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@cache
def _prctl() -> Any | None:
    """libc's ``prctl`` on Linux (looked up before any fork); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux only)."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@cache
def _spawner() -> ThreadPoolExecutor:
    """One long-lived thread that starts rustac for threads other than the main one.

    Linux sends the parent-death signal when the *thread* that forked the child ends: a
    server started in a short-lived worker thread would die with that thread.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rustac-spawner")


def _spawn(launch: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run ``launch`` on a thread that lives as long as the process."""
    if threading.current_thread() is threading.main_thread():
        return launch()
    return _spawner().submit(launch).result()


def _check_catalog_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(
            f"STAC {what} file {str(path)!r} does not exist",
            hint="generate the demo region first, or point to an existing catalog",
        )


def _collection_id(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"STAC collection file {str(path)!r} is not JSON ({exc})", hint="rewrite it"
        ) from None
    if not isinstance(data, dict) or data.get("type") != "Collection" or "id" not in data:
        raise DataError(
            f"STAC collection file {str(path)!r} is not a STAC Collection",
            hint="give a file with type 'Collection' and an id",
        )
    return str(data["id"])


class LocalStacServer:
    """``rustac serve`` on 127.0.0.1 as a context manager; ``.url`` is the API root.

    ``collection_json`` may be one file or several (items of several collections in one
    ``items_json``); ``more_items`` are further item files served beside ``items_json`` (the
    demo's Sentinel-1 and DEM items). ``port=None`` picks a free port.
    """

    def __init__(
        self,
        collection_json: Path | str | Sequence[Path | str],
        items_json: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 30.0,
        more_items: Sequence[Path | str] = (),
    ) -> None:
        paths = [collection_json] if isinstance(collection_json, str | Path) else collection_json
        self.collection_jsons = [Path(p).resolve() for p in paths]
        self.items_json = Path(items_json).resolve()
        self.more_items = [Path(p).resolve() for p in more_items]
        self.host = host
        self.requested_port = port
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.collection_ids: list[str] = []
        self.label = str(self.items_json)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._catalog: LocalCatalog | None = None
        self._work_dir: Path | None = None

    @classmethod
    def from_source(
        cls,
        source: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 30.0,
        *,
        default_collection: str = "items",
    ) -> Self:
        """A server for any local STAC source (see :func:`read_stac_source`).

        The source is read now (bad input raises here); the files rustac reads are written to
        a temporary folder, which ``stop()`` deletes (``start()`` writes them again).
        """
        catalog = read_stac_source(source, default_collection=default_collection)
        work_dir = Path(tempfile.mkdtemp(prefix="cropflow-stac-"))
        try:
            collections, items = write_server_files(catalog, work_dir)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        server = cls(collections, items, host, port, startup_timeout_s)
        server.label = str(source)
        server._catalog = catalog
        server._work_dir = work_dir
        return server

    @property
    def catalog(self) -> LocalCatalog | None:
        """What ``from_source`` read (None for a server over given files)."""
        return self._catalog

    def _write_source_files(self) -> None:
        """Write the files of a ``from_source`` server again after a stop."""
        if self._catalog is None or self._work_dir is not None:
            return
        self._work_dir = Path(tempfile.mkdtemp(prefix="cropflow-stac-"))
        collections, items = write_server_files(self._catalog, self._work_dir)
        self.collection_jsons, self.items_json = collections, items

    def _remove_source_files(self) -> None:
        work_dir, self._work_dir = self._work_dir, None
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self.port is None or self._proc is None:
            raise StacError("the local STAC server is not running", hint="call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers; StacError if it cannot."""
        if self.running:
            return self
        try:
            return self._start()
        except BaseException:  # Ctrl-C or SIGTERM while starting too: leave nothing behind
            self.stop()
            raise

    def _start(self) -> Self:
        self._write_source_files()
        if not self.collection_jsons:
            raise DataError("no STAC collection file given", hint="give collection.json")
        for path in self.collection_jsons:
            _check_catalog_file(path, "collection")
        for path in (self.items_json, *self.more_items):
            _check_catalog_file(path, "items")
        self.collection_ids = [_collection_id(p) for p in self.collection_jsons]
        exe = find_rustac()
        if self.requested_port is not None and not port_is_free(self.host, self.requested_port):
            raise StacError(
                f"port {self.requested_port} on {self.host} is already in use",
                hint="stop what listens there, or choose another port (port=None picks one)",
            )
        attempts = 1 if self.requested_port is not None else _START_ATTEMPTS
        last_error = ""
        for _ in range(attempts):
            port = self.requested_port or free_port(self.host)
            self._launch(exe, port)
            error = self._wait_ready()
            if error is None:
                log.info("STAC API of %s serving at %s", self.label, self.url)
                return self
            last_error = error
            self._stop_process()
            if "in use" not in error.lower():
                break
        raise StacError(
            f"rustac could not serve {self.label!r} on {self.host}: {last_error}",
            hint="check the catalog files (rustac says what is wrong) and that the port is free",
        )

    def _launch(self, exe: str, port: int) -> None:
        self.port = port
        self._log = tempfile.TemporaryFile(prefix="rustac-")  # noqa: SIM115 - closed by stop()
        cmd = [exe, "serve", "--addr", f"{self.host}:{port}"]
        cmd += [*(str(p) for p in self.collection_jsons), str(self.items_json)]
        cmd += [str(p) for p in self.more_items]
        out = self._log

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C goes to Python, which stops it
                preexec_fn=_die_with_parent(),  # only prctl (looked up before the fork)
            )

        self._proc = _spawn(launch)

    def _log_tail(self, limit: int = 600) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return " ".join(text[-limit:].split())

    def _wait_ready(self) -> str | None:
        """None once the root answers with STAC JSON; else why it did not."""
        proc = self._proc
        if proc is None:
            return "it was not started"
        deadline = time.monotonic() + self.startup_timeout_s
        root = f"http://{self.host}:{self.port}/"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"it exited with status {proc.returncode}: {self._log_tail()}"
            try:
                response = httpx.get(root, timeout=1.0)
                if response.status_code == 200 and "links" in response.json():
                    return None
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(_POLL_S)
        return f"it did not answer within {self.startup_timeout_s:g} s: {self._log_tail()}"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and delete the files that
        ``from_source`` wrote; safe to call twice."""
        self._stop_process()
        self._remove_source_files()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
        work_dir = getattr(self, "_work_dir", None)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


class _StopRequested(BaseException):
    """Raised in the main thread by a SIGTERM/SIGINT handler: stop serving cleanly."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While inside, the first SIGTERM or SIGINT raises :class:`_StopRequested`; later ones are
    ignored so that the clean-up they started finishes. Main thread only (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise _StopRequested(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)


def _serve_until_stopped(make_server: Callable[[], LocalStacServer]) -> None:
    """Start the server ``make_server`` builds and block until SIGTERM/SIGINT or its exit."""
    status = 0
    try:
        with _stop_on_signals():
            server = make_server()
            with server:  # stops the server on the way out, whatever the way
                print(
                    f"STAC API serving {server.label} at {server.url}  (Ctrl-C stops)",
                    flush=True,
                )
                status = server.wait()
    except (_StopRequested, KeyboardInterrupt):  # also while reading or starting
        return
    if status != 0:
        raise StacError(f"rustac exited with status {status}", hint="see its output above")


def serve(
    collection_json: Path | str | Sequence[Path | str],
    items_json: Path | str,
    host: str | None = None,
    port: int | None = None,
    more_items: Sequence[Path | str] = (),
) -> None:
    """Serve a catalog until SIGTERM or Ctrl-C. Host/port default to ``settings.stack``."""
    stack = get_settings().stack
    _serve_until_stopped(
        lambda: LocalStacServer(
            collection_json,
            items_json,
            host=host or stack.host,
            port=port or stack.stac_port,
            more_items=more_items,
        )
    )


def demo_catalog_files(stac_dir: Path) -> tuple[list[Path], Path, list[Path]]:
    """The demo catalog's files: collections (Sentinel-2 first, then the Sentinel-1 and DEM
    ones a demo generated with them has), the Sentinel-2 items, and the other items."""
    collections = [stac_dir / "collection.json", *sorted(stac_dir.glob("collection-*.json"))]
    return collections, stac_dir / "items.json", sorted(stac_dir.glob("items-*.json"))


def serve_source(
    source: Path | str,
    host: str | None = None,
    port: int | None = None,
    *,
    default_collection: str = "items",
) -> None:
    """Serve any local STAC source (see :func:`read_stac_source`) until SIGTERM or Ctrl-C.

    Host/port default to ``settings.stack``; returns normally after such a stop.
    """
    stack = get_settings().stack
    _serve_until_stopped(
        lambda: LocalStacServer.from_source(
            source,
            host=host or stack.host,
            port=port or stack.stac_port,
            default_collection=default_collection,
        )
    )
