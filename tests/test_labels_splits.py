"""Splits without leakage: spatial blocks, fields and patches in one split, rules, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from test_labels_common import UTM, field_scene, position_bands, write_cube, write_mapping

from cropflow.errors import ConfigError
from cropflow.labels.build import build_training_set
from cropflow.labels.options import SPLIT_NAMES, LabelSource, SplitFractions, TrainingSetParams
from cropflow.labels.splits import (
    Units,
    assign_splits,
    block_units,
    leakage_problems,
    load_split_rules,
    patch_origins,
    stratified_assign,
    units_from_rasters,
)
from cropflow.labels.store import open_training_set

GBOX = GeoBox.from_bbox((500000, 5200000, 501280, 5201280), UTM, resolution=10)  # 128 px


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("splits")
    cube = write_cube(
        tmp / "cube.zarr", GBOX, ["2021-04-01", "2021-06-01"], position_bands(GBOX, 2)
    )
    gdf, _ = field_scene(GBOX, 6, 6, gap=1)  # 36 fields of ~21 px: larger than 8 px blocks
    gdf.to_file(tmp / "parcels.gpkg")
    return {
        "cube": cube,
        "labels": tmp / "parcels.gpkg",
        "mapping": write_mapping(tmp / "mapping.yaml"),
        "tmp": tmp,
    }


def _params(scene: dict[str, Path], name: str, **kw: object) -> TrainingSetParams:
    return TrainingSetParams(
        cube_uri=str(scene["cube"]),
        labels=LabelSource(path=str(scene["labels"]), mapping_path=str(scene["mapping"])),
        name=name,
        out_uri=str(scene["tmp"] / f"{name}.zarr"),
        **kw,
    )


def test_pixel_split_keeps_fields_whole_and_a_random_split_would_not(
    scene: dict[str, Path],
) -> None:
    summary = build_training_set(_params(scene, "px", splits={"block_size_px": 8}))
    ts = open_training_set(summary.uri)
    split_codes = ts.dataset["split"].values
    fields = ts.fields
    assert all(n > 0 for n in summary.n_samples.values())
    assert leakage_problems(split_codes, fields) == []
    random_split = np.random.default_rng(0).integers(0, 3, size=split_codes.size)
    problems = leakage_problems(random_split, fields)
    assert problems and "fields are in more than one split" in problems[0]


def test_patches_never_cross_splits_and_a_random_split_would(scene: dict[str, Path]) -> None:
    summary = build_training_set(
        _params(
            scene,
            "patch",
            samples={"kind": "patch", "patch_size": 16, "patch_stride": 8},
            splits={"block_size_px": 32},
        )
    )
    ts = open_training_set(summary.uri)
    split_codes = ts.dataset["split"].values
    size = ts.patch_size
    assert size == 16
    rows, cols = ts.dataset["row"].values, ts.dataset["col"].values
    windows = np.stack([rows, rows + size, cols, cols + size], axis=1)
    assert len(set(split_codes.tolist())) == 3
    assert leakage_problems(split_codes, ts.fields, windows) == []
    random_split = np.random.default_rng(1).integers(0, 3, size=split_codes.size)
    problems = leakage_problems(random_split, ts.fields, windows)
    assert any("fields" in p for p in problems)
    assert any("pixels are shared" in p for p in problems)


def test_field_sets_and_splits_are_deterministic_by_seed(scene: dict[str, Path]) -> None:
    a = open_training_set(
        build_training_set(
            _params(scene, "fa", samples={"kind": "field"}, splits={"block_size_px": 16, "seed": 7})
        ).uri
    )
    b = open_training_set(
        build_training_set(
            _params(scene, "fb", samples={"kind": "field"}, splits={"block_size_px": 16, "seed": 7})
        ).uri
    )
    c = open_training_set(
        build_training_set(
            _params(scene, "fc", samples={"kind": "field"}, splits={"block_size_px": 16, "seed": 8})
        ).uri
    )
    key = lambda ts: dict(zip(ts.fields.tolist(), ts.split.tolist(), strict=True))  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_split_rules_file_bbox_and_stratified(scene: dict[str, Path], tmp_path: Path) -> None:
    # the western third of the cube (in lon/lat) is test, the rest 80/20 train/val
    west, south, east, north = GBOX.to_crs("EPSG:4326").extent.boundingbox[:4]
    cut = west + (east - west) / 3
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  - {{split: test, bbox: [{west - 1}, {south - 1}, {cut}, {north + 1}], "
        f"crs: 'EPSG:4326'}}\n  - stratified: {{train: 0.8, val: 0.2, test: 0.0}}\n"
    )
    summary = build_training_set(
        _params(scene, "rules", splits={"block_size_px": 8, "rules_path": str(rules)})
    )
    ts = open_training_set(summary.uri)
    lon = ts.dataset["lon"].values
    split = ts.split
    # units are whole fields of ~21 px; a field straddling the cut follows its centroid
    assert (split[lon < cut - 0.001] == "test").all()
    assert (split[lon > cut + 0.001] != "test").all()
    assert summary.n_samples["val"] > 0


def test_rules_files_are_validated(tmp_path: Path) -> None:
    bad = {
        "stratified_not_last": "rules:\n  - stratified: {train: 1.0, val: 0.0, test: 0.0}\n"
        "  - {split: test, year: [2020]}\n",
        "two_selectors": "rules:\n  - {split: test, year: [2020], tile: [T1]}\n",
        "no_split": "rules:\n  - {year: [2020]}\n",
        "bad_fractions": "rules:\n  - stratified: {train: 0.5, val: 0.1, test: 0.1}\n",
    }
    for name, text in bad.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_split_rules(path)
        assert str(path) in str(err.value), name


def test_tile_and_year_rules_and_missing_attributes(tmp_path: Path) -> None:
    counts = np.ones((6, 2), dtype=np.int64)
    units = Units(
        counts=counts,
        tile=np.array(["A", "A", "B", "B", "C", "C"], dtype=object),
        year=np.array([2020, 2021, 2020, 2021, 2020, 2021]),
    )
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n  - {split: test, tile: [B]}\n  - {split: val, year: [2021]}\n"
        "  - stratified: {train: 1.0, val: 0.0, test: 0.0}\n"
    )
    codes = assign_splits(units, SplitFractions(), 0, load_split_rules(path))
    names = [SPLIT_NAMES[c] for c in codes]
    assert names == ["train", "val", "test", "test", "train", "val"]
    no_attrs = Units(counts=counts)
    with pytest.raises(ConfigError, match="tile"):
        assign_splits(no_attrs, SplitFractions(), 0, load_split_rules(path))


def test_a_final_stratified_rule_may_give_train_nothing_when_a_rule_selects_train(
    tmp_path: Path,
) -> None:
    units = Units(counts=np.ones((6, 2), dtype=np.int64), year=np.arange(2018, 2024))
    path = tmp_path / "zero_train.yaml"
    path.write_text(
        "rules:\n  - {split: train, year: [2018, 2019, 2020]}\n"
        "  - stratified: {train: 0.0, val: 0.5, test: 0.5}\n"
    )
    rules = load_split_rules(path)
    codes = assign_splits(units, SplitFractions(), 0, rules)
    names = [SPLIT_NAMES[c] for c in codes]
    assert names[:3] == ["train"] * 3 and set(names[3:]) <= {"val", "test"}
    # a train rule that matches nothing leaves train empty: refused
    with pytest.raises(ConfigError, match="no split unit is in train"):
        assign_splits(
            Units(counts=units.counts, year=np.arange(2028, 2034)), SplitFractions(), 0, rules
        )
    # without a train rule, a zero train share is refused when the file is read
    path.write_text(
        "rules:\n  - {split: test, year: [2018]}\n  - stratified: {train: 0, val: 1, test: 0}\n"
    )
    with pytest.raises(ConfigError, match="no rule selects train") as err:
        load_split_rules(path)
    assert str(path) in str(err.value)
    # the default fractions still need a positive train share
    with pytest.raises(ValueError, match="positive"):
        SplitFractions(train=0.0, val=0.5, test=0.5)


def test_stratified_assignment_follows_fractions_per_class() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros((600, 3), dtype=np.int64)
    counts[np.arange(600), rng.integers(0, 3, 600)] = rng.integers(5, 50, 600)
    codes = stratified_assign(
        counts, SplitFractions(train=0.6, val=0.2, test=0.2), np.random.default_rng(1)
    )
    for k in range(3):
        total = counts[:, k].sum()
        shares = [counts[codes == s, k].sum() / total for s in range(3)]
        assert shares == pytest.approx([0.6, 0.2, 0.2], abs=0.03)
    none_in_test = stratified_assign(
        counts, SplitFractions(train=0.8, val=0.2, test=0.0), np.random.default_rng(1)
    )
    assert not (none_in_test == 2).any()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 12),
    st.lists(
        st.tuples(st.integers(0, 39), st.integers(0, 39), st.integers(1, 15), st.integers(1, 15)),
        max_size=8,
    ),
)
def test_block_units_partition_the_grid_and_keep_fields_whole(
    ny: int, nx: int, block: int, rects: list[tuple[int, int, int, int]]
) -> None:
    field = np.zeros((ny, nx), np.int32)
    for k, (r, c, h, w) in enumerate(rects, start=1):
        field[r : r + h, c : c + w] = k
    unit, n_units = block_units(field, block)
    # reference, by brute force: a pixel's block, or its field's home block (most pixels,
    # then the lowest block number)
    blocks = (np.arange(ny)[:, None] // block) * 1000 + np.arange(nx)[None, :] // block
    ref = blocks.copy()
    for f in np.unique(field[field > 0]):
        ids, counts = np.unique(blocks[field == f], return_counts=True)
        ref[field == f] = ids[counts == counts.max()].min()
    pairs = {(int(u), int(r)) for u, r in zip(unit.ravel(), ref.ravel(), strict=True)}
    assert len(pairs) == len({u for u, _ in pairs}) == len({r for _, r in pairs})  # same partition
    assert set(np.unique(unit).tolist()) == set(range(n_units))
    assert n_units <= -(-ny // block) * -(-nx // block)
    codes = np.arange(n_units) % 3
    assert leakage_problems(codes[unit].ravel(), field.ravel()) == []


@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 300))
def test_patch_origins_tile_the_extent(size: int, stride: int, extent: int) -> None:
    origins = patch_origins(size, stride, extent)
    if size > extent:
        assert origins.size == 0
        return
    assert origins[0] == 0
    assert (np.diff(origins) == stride).all()
    assert origins[-1] + size <= extent < origins[-1] + stride + size


def test_units_from_rasters_counts_labelled_pixels_per_class() -> None:
    label = np.array([[1, 1, 255], [2, 255, 5]], np.uint8)
    unit = np.array([[0, 0, 1], [1, 1, 1]], np.int32)
    units = units_from_rasters(
        label, unit, 2, [1, 2, 5], centres=(np.array([0.5, 1.5, 2.5]), np.array([10.0, 20.0]))
    )
    assert units.counts.tolist() == [[2, 0, 0], [0, 1, 1]]
    assert units.cx is not None and units.cy is not None
    assert units.cx.tolist() == [1.0, (2.5 + 0.5 + 1.5 + 2.5) / 4]
    assert units.cy.tolist() == [10.0, (10 + 20 * 3) / 4]
