"""Field batches cut to their own fields (issue 13: field_bigru's per-epoch cost): the cut
window holds every field pixel and changes no output; batches group similar-sized fields and
still visit every field once per epoch."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.classes import ClassDef, ClassMap
from cropflow.predict.testing import tiny_bundle
from cropflow.train.data import (
    Normaliser,
    SplitArrays,
    batch_indices,
    field_canvases,
    field_extents,
    field_window,
    sized_batches,
    take,
)
from cropflow.train.engine import to_batch
from models.base import Batch

FIELD = {
    "name": "field_bigru",
    "conv_widths": [4, 4],
    "kernel_sizes": [3, 3],
    "norm_groups": 2,
    "hidden_size": 8,
    "num_layers": 1,
}
CLASSES = ClassMap(classes=[ClassDef(id=1, name="a"), ClassDef(id=2, name="b")])
T, C, SIDE = 3, 2, 48


def _fields(extents: list[tuple[int, int]], seed: int) -> SplitArrays:
    """Rectangular fields of the given (rows, cols) extents on canvases of ``SIDE``."""
    rng = np.random.default_rng(seed)
    rows, cols, counts = [], [], []
    for h, w in extents:
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        keep = rng.random(r.shape) < 0.9  # ragged edges and holes
        keep[0, 0] = keep[-1, -1] = True  # the full extent both ways
        rows.append(r[keep] + 100)
        cols.append(c[keep] + 200)
        counts.append(int(keep.sum()))
    n = np.asarray(counts, np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    pixels = rng.normal(size=(int(n.sum()), T, C)).astype(np.float32)
    x, masks = field_canvases(pixels, np.concatenate(rows), np.concatenate(cols), starts, n, SIDE)
    k = len(extents)
    return SplitArrays(
        x=x,
        y=np.zeros(k, np.int64),
        dates=np.tile(np.array([100, 130, 160], np.int64), (k, 1)),
        pad_mask=np.zeros((k, T), bool),
        field_mask=masks,
    )


extent = st.tuples(st.integers(1, SIDE), st.integers(1, SIDE))


@settings(max_examples=60, deadline=None)
@given(st.lists(extent, min_size=1, max_size=6), st.integers(0, 9))
def test_the_window_is_a_square_holding_every_field_pixel(
    extents: list[tuple[int, int]], seed: int
) -> None:
    masks = _fields(extents, seed).field_mask
    assert masks is not None
    rows, cols = field_window(masks)
    side = rows.stop - rows.start
    assert cols.stop - cols.start == side
    assert side == max(max(h, w) for h, w in extents)
    assert min(rows.start, cols.start) >= 0 and max(rows.stop, cols.stop) <= SIDE
    assert masks[:, rows, cols].sum() == masks.sum(), "a field pixel fell outside"
    np.testing.assert_array_equal(field_extents(masks), [max(h, w) for h, w in extents])


def test_a_batch_cut_to_its_fields_gives_the_same_output() -> None:
    split = _fields([(5, 9), (12, 4), (7, 7)], seed=1)
    bundle = tiny_bundle(FIELD, ["a", "b"], T, CLASSES, "field", SIDE)
    model = bundle.model.eval()
    norm = Normaliser(["a", "b"], bundle.contract.normalisation)
    t = take(split, torch.arange(3), norm)
    assert t.x.shape[-2:] == (12, 12) and t.field_mask is not None
    full = Batch(
        x=norm(torch.from_numpy(split.x)),
        dates=to_batch(t, "day_of_year").dates,
        pad_mask=torch.from_numpy(split.pad_mask),
        field_mask=torch.from_numpy(split.field_mask),
    )
    with torch.no_grad():
        cut = model(to_batch(t, "day_of_year")).logits
        whole = model(full).logits
    torch.testing.assert_close(cut, whole, atol=1e-5, rtol=1e-4)


def test_sized_batches_visit_each_field_once_and_group_similar_sizes() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 64, size=203).astype(np.int64)
    gen = torch.Generator().manual_seed(3)
    batches = list(sized_batches(sizes, 8, gen))
    plain = list(batch_indices(len(sizes), 8, torch.Generator().manual_seed(3)))
    assert len(batches) == len(plain)
    seen = torch.cat(batches).numpy()
    assert sorted(seen.tolist()) == list(range(203))  # 203 = 25 x 8 + 3: nothing dropped

    def cost(bs: list[torch.Tensor]) -> float:  # canvas area each batch pays for
        return float(sum(len(b) * sizes[b.numpy()].max() ** 2 for b in bs))

    assert cost(batches) < 0.7 * cost(plain)
    # another epoch, another order
    again = torch.cat(list(sized_batches(sizes, 8, gen))).numpy()
    assert not np.array_equal(again, seen)
