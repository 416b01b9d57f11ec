"""Writing files safely, and storage failures as one clear error.

* :func:`atomic_write` / :func:`atomic_file`: write a file aside (same folder), fsync it,
  rename it into place; a crash leaves the old file or the new one, never half of one, and no
  temporary file; :func:`replace_dir` does the same for a finished folder (a Zarr store).
* :func:`storage_errors`: around a stage's writes, turns "no space left", "read-only file
  system", "permission denied" and GDAL's write failures on a full disk into one
  :class:`~cropflow.errors.StorageError` that names the folder, what was being done and the
  fix, instead of a traceback (a full disk otherwise surfaces as e.g.
  ``TIFFReadDirectory:Failed to read directory at offset 4096``).
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cropflow.errors import CropflowError, StorageError

#: Below this many free bytes, a failed write on the folder's device is taken as a full disk.
LOW_SPACE_BYTES = 64 * 2**20

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (aside, fsync, rename); no leftover on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a path (``to_parquet``,
    ``torch.save``, ``savefig``); when the block succeeds it is fsynced and renamed to
    ``path``, else removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(new: Path, final: Path) -> None:
    """Put the finished folder ``new`` at ``final`` (same parent): an existing ``final`` is
    renamed aside first and removed after, so a reader sees the old one or the new one."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except OSError:
        if old.exists() and not final.exists():
            old.rename(final)
        raise
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing parent (where the device can be asked)."""
    path = folder.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the device holding ``folder`` (None when it cannot be told)."""
    try:
        return shutil.disk_usage(_existing(Path(folder))).free
    except OSError:
        return None


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:.0f} MiB"


def storage_error(exc: BaseException, folder: Path, doing: str) -> StorageError | None:
    """The StorageError that ``exc`` (raised while ``doing`` under ``folder``) stands for;
    None when it is not a storage failure."""
    folder = Path(folder)
    code = getattr(exc, "errno", None)
    where = getattr(exc, "filename", None) or folder
    free = free_bytes(folder)
    if code in _FULL or (_is_write_failure(exc) and free is not None and free < LOW_SPACE_BYTES):
        return StorageError(
            f"no space left while {doing}: the disk holding {folder} is full ({_mb(free)} free)",
            hint="free some space there, or set CROPFLOW_WORKDIR to a folder on a larger "
            "disk; finished stages are kept and a rerun resumes",
        )
    if code in _READ_ONLY:
        return StorageError(
            f"cannot write {where} while {doing}: the file system is read-only",
            hint="set CROPFLOW_WORKDIR to a writable folder (or remount the disk read-write)",
        )
    if code in _DENIED:
        return StorageError(
            f"permission denied writing {where} while {doing}",
            hint=f"make {folder} writable for this user, or set CROPFLOW_WORKDIR to a folder "
            "you can write",
        )
    return None


def _is_write_failure(exc: BaseException) -> bool:
    """OSError without an errno, or a GDAL/rasterio I/O error (which hide ENOSPC)."""
    if isinstance(exc, OSError) and getattr(exc, "errno", None) is None:
        return True
    return type(exc).__module__.startswith("rasterio")


@contextmanager
def storage_errors(folder: Path, doing: str) -> Iterator[None]:
    """Turn a storage failure raised inside the block into one :class:`StorageError`.

    Other errors (and cropflow's own) pass unchanged."""
    try:
        yield
    except CropflowError:
        raise
    except Exception as exc:
        translated = storage_error(exc, folder, doing)
        if translated is None:
            raise
        raise translated from exc


def zarr_stamp(store: str | Path) -> tuple[int, int, int]:
    """Inode, modification time and size of a Zarr store's root metadata ((0, 0, 0) when
    missing): a cache key that changes when the store is written again or made anew at the
    same path."""
    try:
        meta = (Path(store) / "zarr.json").stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (meta.st_ino, meta.st_mtime_ns, meta.st_size)


def consolidate_zarr(path: Path) -> None:
    """Write the consolidated metadata of the Zarr v3 store at ``path``.

    A reader then gets every array's metadata in one read, and ``xarray.open_zarr(path)``
    opens it without its "much slower" warning. Call it after the store's last metadata
    change (array data may still be written later; metadata may not).
    """
    import warnings

    import zarr

    with warnings.catch_warnings():
        # zarr-python writes it for v3 stores too, inside zarr.json, and says it is not (yet)
        # part of the v3 specification: readers that do not know it ignore it.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path), zarr_format=3)
