"""Building a cube: plan (no reads) -> block tasks on Dask -> final step.

``build_cube`` = ``plan_cube`` + ``write_cube``. ``write_cube`` is the only step that reads
pixels: one Dask task per missing block (read its COG windows, composite, write its Zarr
chunks, write its marker), so memory is bounded by the block, never the area, and a re-run
after a crash computes only the blocks without a marker. ``lazy_cube`` gives the same cube as
a lazy xarray Dataset (nothing is read until it is computed).
"""

from __future__ import annotations

import logging
import operator
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import pystac
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from distributed import Client, as_completed

from cropflow.cube.block import BlockStats, compute_block
from cropflow.cube.cluster import dask_client
from cropflow.cube.grid import Block
from cropflow.cube.params import CubeParams
from cropflow.cube.plan import BadItem, CubePlan, check_bad_fraction, plan_cube
from cropflow.cube.store import (
    CubeRef,
    create_store,
    cube_path,
    dir_size,
    done_blocks,
    finalize,
    items_version,
    partial_path,
    read_ref,
    reopen,
    step_stats,
    store_key,
    template,
    write_block,
)
from cropflow.errors import DataError
from cropflow.settings import get_settings
from cropflow.stac.profiles import CollectionProfile
from cropflow.storage import storage_error, storage_errors

log = logging.getLogger(__name__)


def default_cube_uri(plan: CubePlan, workdir: Path | None = None) -> Path:
    """``<workdir>/cubes/<key>.zarr``: the same plan always maps to the same store."""
    return ((workdir or get_settings().workdir) / "cubes" / f"{plan.key}.zarr").resolve()


def build_block(block: Block, plan: CubePlan, path: str, scope: str = "") -> BlockStats:
    """One block task: compute it, write its chunks and its marker; return its stats.

    ``scope``: one build (a worker forgets the sources found unreadable by another build)."""
    result = compute_block(plan, block, scope=scope)
    write_block(Path(path), result)
    return result.stats


def _collect_bad(plan: CubePlan, stats: Sequence[BlockStats]) -> list[BadItem]:
    seen = {b.id for b in plan.bad_items}
    bad = list(plan.bad_items)
    for s in stats:
        for b in s.bad_items:
            if b.id not in seen:
                seen.add(b.id)
                bad.append(b)
    return bad


def _run_blocks(
    client: Client,
    plan: CubePlan,
    todo: list[Block],
    path: Path,
    on_done: Callable[[], None] | None = None,
) -> list[BlockStats]:
    plan_future = client.scatter(plan, broadcast=True)
    scope = f"{plan.key}-{uuid.uuid4().hex[:8]}"
    futures = client.map(
        build_block, todo, plan=plan_future, path=str(path), scope=scope, pure=False
    )
    out: list[BlockStats] = []
    try:
        for fut in as_completed(futures):
            out.append(fut.result())
            if on_done is not None:
                on_done()
    except Exception as exc:
        client.cancel(futures)
        storage = storage_error(exc, path.parent, f"writing cube {plan.key}")
        if storage is not None:
            raise storage from exc
        raise DataError(
            f"a block of cube {plan.key} failed after {len(out)} of {len(todo)} were written: "
            f"{type(exc).__name__}: {exc}",
            hint="fix the cause and re-run the same build: finished blocks are kept",
        ) from exc
    return out


def blocks_touching(plan: CubePlan, item_ids: set[str]) -> set[str]:
    """Keys of the blocks whose area an item of ``item_ids`` covers."""
    boxes = [i.bbox for i in plan.items if i.id in item_ids]
    gbox = plan.geobox()
    out = set()
    for block in plan.blocks():
        left, bottom, right, top = gbox[block.slices].boundingbox
        if any(_overlaps(b, (left, bottom, right, top)) for b in boxes):
            out.add(block.key)
    return out


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _retry_degraded(plan: CubePlan, final: Path, partial: Path) -> set[str]:
    """Reopen a complete but degraded cube for a retry of the items it was built without.

    Returns the items to retry (empty: the cube is complete, or every skipped item is still
    unreadable before the build); the cube is then back to a partial store without the
    markers of the blocks those items touch, so a resumed build rewrites only those."""
    recorded = {b.id for b in read_ref(final).bad_items}
    retry = recorded - plan.skipped_ids
    if not retry:
        if recorded:
            log.warning(
                "cube %s stays degraded: %d item(s) are still unreadable (%s)",
                final,
                len(recorded),
                ", ".join(sorted(recorded)[:3]),
            )
        return set()
    redo = blocks_touching(plan, retry)
    log.warning(
        "cube %s was built without %d item(s) (%s): retrying them, rewriting %d block(s)",
        final,
        len(retry),
        ", ".join(sorted(retry)[:3]),
        len(redo),
    )
    reopen(final, partial, drop_blocks=redo)
    return retry


def write_cube(
    plan: CubePlan,
    uri: str | Path | None = None,
    client: Client | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    rebuild: bool = False,
    executor: Literal["dask", "local"] = "dask",
) -> CubeRef:
    """Write (or resume, or find finished) the cube of ``plan``; returns its reference.

    A complete cube of the same plan is returned as it is, unless it is *degraded* (items were
    skipped as unreadable): then the skipped items are tried again and the blocks they touch
    rewritten. ``rebuild``: build every block again; the existing cube stays in place until
    the new one replaces it. ``on_progress(done, total)`` is called with blocks written
    (finished ones included) at the start and after each block. ``executor="local"`` writes the
    blocks one after the other in this process (a small cube needs no cluster)."""
    final = cube_path(uri) if uri is not None else default_cube_uri(plan)
    partial = partial_path(final)
    if final.exists():
        if store_key(final) != plan.key:
            raise DataError(
                f"{final} already holds another cube (different parameters or items)",
                hint="choose another output path, or delete the old cube",
            )
        if not rebuild and not _retry_degraded(plan, final, partial):
            log.info("cube %s already complete", final)
            return read_ref(final).model_copy(update={"blocks_written": 0, "elapsed_s": 0.0})
    t0 = time.perf_counter()
    done = {} if rebuild else (done_blocks(partial) if store_key(partial) == plan.key else {})
    if not done:
        with storage_errors(final.parent, f"creating cube {final.name}"):
            create_store(partial, plan)
    blocks = plan.blocks()
    todo = [r for r in blocks if r.key not in done]
    log.info("cube %s: %d blocks, %d to write", plan.key, len(blocks), len(todo))
    ctx: AbstractContextManager[Client] = nullcontext(client) if client else dask_client()
    new: list[BlockStats] = []
    count = {"done": len(blocks) - len(todo)}

    def on_done() -> None:
        count["done"] += 1
        if on_progress is not None:
            on_progress(count["done"], len(blocks))

    if on_progress is not None:
        on_progress(count["done"], len(blocks))
    if todo and executor == "local":
        scope = f"{plan.key}-{uuid.uuid4().hex[:8]}"
        for block in todo:
            new.append(build_block(block, plan, str(partial), scope))
            on_done()
    elif todo:
        with ctx as c:
            new = _run_blocks(c, plan, todo, partial, on_done)
    stats = [*done.values(), *new]
    bad = _collect_bad(plan, stats)
    n_considered = len(plan.items)
    check_bad_fraction(len(bad), n_considered, plan.params.max_bad_fraction, bad)
    bad_ids = {b.id for b in bad}
    used = sorted(i.id for i in plan.items if i.id not in bad_ids)
    ref = CubeRef(
        uri=str(final),
        key=plan.key,
        version=items_version(plan.key, used),
        degraded=bool(bad),
        grid=plan.grid,
        chunk=plan.chunk,
        period=plan.axis.period,
        times=[t.isoformat() for t in plan.axis.times],
        bands=plan.bands,
        indices=plan.indices,
        n_items=len(used),
        bad_items=bad,
        blocks_total=len(blocks),
        blocks_written=len(new),
        size_bytes=dir_size(partial),
        elapsed_s=time.perf_counter() - t0,
        task_s=sum(s.seconds + s.write_seconds for s in new),
        steps=step_stats(plan, stats),
    )
    with storage_errors(final.parent, f"finishing cube {final.name}"):
        finalize(partial, final, ref.model_dump(mode="json", exclude={"uri"}), bad)
    if bad:
        log.warning(
            "cube %s is DEGRADED: built without %d of %d items (%s); a rerun retries them",
            final,
            len(bad),
            len(plan.items),
            "; ".join(f"{b.id}: {b.reason}" for b in bad[:3]),
        )
    return ref


def build_cube(
    items: Sequence[pystac.Item],
    profile: CollectionProfile,
    params: CubeParams | None = None,
    uri: str | Path | None = None,
    *,
    client: Client | None = None,
    provider: str | None = None,
    search_uri: str | None = None,
) -> CubeRef:
    """Plan and write a cube from STAC items and their collection profile."""
    plan = plan_cube(
        items, profile, params or CubeParams(), provider=provider, search_uri=search_uri
    )
    return write_cube(plan, uri, client=client)


def _block_arrays(plan: CubePlan, block: Block) -> dict[str, object]:
    return dict(compute_block(plan, block).arrays)


def lazy_cube(plan: CubePlan) -> xr.Dataset:
    """The cube as a lazy Dataset: one dask task per block, nothing read until computed."""
    ds = template(plan)
    blocks = plan.blocks()
    ny = max(r.iy for r in blocks) + 1
    nx = max(r.ix for r in blocks) + 1
    ychunks = tuple(r.shape[0] for r in blocks if r.ix == 0)
    xchunks = tuple(r.shape[1] for r in blocks if r.iy == 0)
    base = f"cube-block-{plan.key}"
    base_layer: dict[Any, Any] = {(base, r.iy, r.ix): (_block_arrays, plan, r) for r in blocks}
    for name in plan.variables:
        vname = f"cube-{name}-{plan.key}"
        layer: dict[Any, Any] = {
            (vname, 0, iy, ix): (operator.getitem, (base, iy, ix), name)
            for iy in range(ny)
            for ix in range(nx)
        }
        graph = HighLevelGraph({base: base_layer, vname: layer}, {base: set(), vname: {base}})
        arr = da.Array(
            graph, vname, chunks=((len(plan.axis),), ychunks, xchunks), dtype=ds[name].dtype
        )
        ds[name] = ds[name].copy(data=arr)
    return ds


def plan_from_search(
    search_uri: str, provider: str | None = None, params: CubeParams | None = None
) -> CubePlan:
    """Plan a cube from a saved search (``SearchResult.uri``) and a collection profile (a
    name or file path).

    The profile defaults to the one recorded with the search, then ``settings.stac.provider``.
    """
    from cropflow.stac.profiles import get_profile
    from cropflow.stac.search import PROVENANCE_KEY, load_search

    items = load_search(search_uri)
    recorded = (items.extra_fields.get(PROVENANCE_KEY) or {}).get("provider")
    name = provider or recorded or get_settings().stac.provider
    return plan_cube(
        list(items),
        get_profile(name),
        params or CubeParams(),
        provider=name,
        search_uri=search_uri,
    )
