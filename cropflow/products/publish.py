"""Atomic publishing of a product folder: write aside, then swap it into place.

``with staged(dest) as stage:`` yields an empty folder next to ``dest`` (same filesystem);
when the block ends without error, ``dest`` is replaced by it with two renames (the old
folder is first renamed to ``.<name>.previous``, then deleted). If the block fails, the
staging folder is removed and ``dest`` is untouched. A crash between the two renames leaves
``.<name>.previous``, which the next publish puts back before doing anything else; staging
folders of dead processes are removed then too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cropflow.errors import PublishError
from cropflow.processes import pid_alive


def previous_path(dest: Path) -> Path:
    """Where the current version is kept while the new one is renamed in."""
    return dest.with_name(f".{dest.name}.previous")


def recover(dest: Path) -> None:
    """Undo what an interrupted publish of ``dest`` left behind."""
    prev = previous_path(dest)
    if prev.exists():
        if dest.exists():
            shutil.rmtree(prev, ignore_errors=True)
        else:
            prev.rename(dest)
    prefix = f".{dest.name}.staging-"
    if dest.parent.is_dir():
        for stale in dest.parent.glob(prefix + "*"):
            pid = stale.name.removeprefix(prefix).split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)


def swap_in(stage: Path, dest: Path) -> None:
    """Replace ``dest`` by ``stage`` (both in the same folder)."""
    prev = previous_path(dest)
    if prev.exists():
        shutil.rmtree(prev)
    if dest.exists():
        dest.rename(prev)
    try:
        stage.rename(dest)
    except OSError as exc:
        if prev.exists() and not dest.exists():
            prev.rename(dest)
        raise PublishError(
            f"could not move the new products into {dest}: {exc}",
            hint="check permissions and free space; the previous products were kept",
        ) from exc
    shutil.rmtree(prev, ignore_errors=True)


@contextmanager
def staged(dest: Path, check: Callable[[], None] | None = None) -> Iterator[Path]:
    """An empty staging folder next to ``dest``, swapped in only if the block succeeds.

    ``check`` runs once the block is done, right before the swap: an exception it raises
    leaves ``dest`` untouched (e.g. the input changed while the products were written)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-{os.getpid()}-", dir=dest.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; products are for everyone to read
    try:
        yield stage
        if check is not None:
            check()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    swap_in(stage, dest)
