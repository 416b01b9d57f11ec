"""A real local STAC API: ``rustac serve`` over one collection file and one items file.

Used for the offline demo (the embedded default) and by the tests::

    with LocalStacServer(stac_dir / "collection.json", stac_dir / "items.json") as server:
        client = pystac_client.Client.open(server.url)

The server keeps everything in memory (rustac's memory backend): search, paging, bbox,
intersects, datetime and collections work; CQL2 ``filter``, ``query`` and ``sortby`` are not
supported by rustac 0.9.18 (it advertises no such conformance class).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from cropflow.errors import DataError, StacError
from cropflow.settings import get_settings

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3
_POLL_S = 0.05


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
    ``items_json``). ``port=None`` picks a free port.
    """

    def __init__(
        self,
        collection_json: Path | str | Sequence[Path | str],
        items_json: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        paths = [collection_json] if isinstance(collection_json, str | Path) else collection_json
        self.collection_jsons = [Path(p).resolve() for p in paths]
        self.items_json = Path(items_json).resolve()
        self.host = host
        self.requested_port = port
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.collection_ids: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

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
        if not self.collection_jsons:
            raise DataError("no STAC collection file given", hint="give collection.json")
        for path in self.collection_jsons:
            _check_catalog_file(path, "collection")
        _check_catalog_file(self.items_json, "items")
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
            try:
                error = self._wait_ready()
            except BaseException:  # Ctrl-C while starting: leave no server behind
                self.stop()
                raise
            if error is None:
                log.info("STAC API of %s serving at %s", self.items_json, self.url)
                return self
            last_error = error
            self.stop()
            if "in use" not in error.lower():
                break
        raise StacError(
            f"rustac could not serve {str(self.items_json)!r} on {self.host}: {last_error}",
            hint="check the catalog files (rustac says what is wrong) and that the port is free",
        )

    def _launch(self, exe: str, port: int) -> None:
        self.port = port
        self._log = tempfile.TemporaryFile(prefix="rustac-")  # noqa: SIM115 - closed by stop()
        cmd = [exe, "serve", "--addr", f"{self.host}:{port}"]
        cmd += [*(str(p) for p in self.collection_jsons), str(self.items_json)]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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
        """Stop the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
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


def serve(
    collection_json: Path | str | Sequence[Path | str],
    items_json: Path | str,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Serve a catalog until interrupted (Ctrl-C). Host/port default to ``settings.stack``."""
    stack = get_settings().stack
    server = LocalStacServer(
        collection_json, items_json, host=host or stack.host, port=port or stack.stac_port
    )
    try:
        with server:  # stops the server on the way out, Ctrl-C included
            print(
                f"STAC API serving {server.items_json} at {server.url}  (Ctrl-C stops)", flush=True
            )
            status = server.wait()
    except KeyboardInterrupt:  # also while starting, or just before the wait
        return
    if status != 0:
        raise StacError(f"rustac exited with status {status}", hint="see its output above")
