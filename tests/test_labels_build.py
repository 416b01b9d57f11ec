"""Building training sets from a cube and parcels: alignment, statistics, layout, flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from test_labels_common import UTM, field_scene, position_bands, write_cube, write_mapping

import cropflow.labels.samples as samples_module
from cropflow.classes import IGNORE_INDEX
from cropflow.errors import DataError, LabelError
from cropflow.labels.build import build_training_set
from cropflow.labels.options import LabelSource, TrainingSetParams
from cropflow.labels.stats import class_weights
from cropflow.labels.store import TrainingSetWriter, open_training_set

GBOX = GeoBox.from_bbox((500000, 5200000, 500960, 5200960), UTM, resolution=10)  # 96 px
TIMES = ["2021-03-15", "2021-05-01", "2021-07-20"]
CLASS_OF_CODE = {115: 1, 311: 5, 411: 2}  # the test mapping; code 999 is unknown (dropped)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("build")
    bands = position_bands(GBOX, len(TIMES))
    rng = np.random.default_rng(5)
    # green differs strongly between the west half (val by the rules below) and the east
    green = rng.normal(0.0, 1.0, size=bands["red"].shape)
    green[:, :, GBOX.shape[1] // 2 :] += 100.0
    bands["green"] = green
    cube = write_cube(tmp / "cube.zarr", GBOX, TIMES, bands, period="1MS")
    gdf, expected = field_scene(GBOX, 4, 4, gap=1)
    gdf.to_file(tmp / "parcels.gpkg")
    codes = dict(zip(gdf["field_id"], gdf["crop_code"], strict=True))
    return {
        "tmp": tmp,
        "cube": cube,
        "labels": tmp / "parcels.gpkg",
        "expected": expected,
        "codes": codes,
        "mapping": write_mapping(tmp / "mapping.yaml"),
    }


def _params(scene: dict[str, object], name: str, **kw: object) -> TrainingSetParams:
    tmp = scene["tmp"]
    assert isinstance(tmp, Path)
    return TrainingSetParams(
        cube_uri=str(scene["cube"]),
        labels=LabelSource(path=str(scene["labels"]), mapping_path=str(scene["mapping"])),
        name=name,
        out_uri=str(tmp / f"{name}.zarr"),
        **kw,
    )


def _expected_class(scene: dict[str, object], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    expected = scene["expected"]
    codes = scene["codes"]
    assert isinstance(expected, np.ndarray) and isinstance(codes, dict)
    fid = expected[rows, cols]
    return np.array([CLASS_OF_CODE.get(codes[f"F{f:03d}"], IGNORE_INDEX) for f in fid])


def test_pixel_training_set_is_aligned_and_complete(scene: dict[str, object]) -> None:
    summary = build_training_set(_params(scene, "pixels", splits={"block_size_px": 16}))
    ts = open_training_set(summary.uri)
    assert ts.kind == "pixel" and ts.bands == ["green", "red", "nir"]  # wavelength order
    assert ts.times.astype("datetime64[D]").astype(str).tolist() == TIMES
    assert ts.doy is not None and ts.doy.tolist() == [74, 121, 201]
    assert (ts.time_kind, ts.period) == ("composite", "1MS")
    rows, cols = ts.dataset["row"].values, ts.dataset["col"].values
    data = ts.data.values
    red, nir = ts.bands.index("red"), ts.bands.index("nir")
    # every sample holds the time series of its own pixel
    assert np.array_equal(data[:, :, red], np.repeat((rows * 1000 + cols)[:, None], 3, axis=1))
    assert np.array_equal(data[:, :, nir], np.broadcast_to(np.arange(3), (len(rows), 3)))
    # and the class of the field the pixel is in; fields of the unknown code are dropped
    assert np.array_equal(ts.labels, _expected_class(scene, rows, cols))
    expected = scene["expected"]
    assert isinstance(expected, np.ndarray)
    known = [f for f in range(1, 17) if scene["codes"][f"F{f:03d}"] in CLASS_OF_CODE]
    n_known = int(np.isin(expected, known).sum())
    assert len(rows) == n_known == sum(summary.n_samples.values())
    # coordinates are pixel centres; lon/lat their WGS84 position
    assert np.allclose(ts.dataset["coord_x"].values, 500000 + 10 * cols + 5)
    assert np.allclose(ts.dataset["coord_y"].values, 5200960 - 10 * rows - 5)
    assert np.all((ts.dataset["lon"].values > 14) & (ts.dataset["lon"].values < 15.1))
    # field source ids travel with the samples
    table = dict(
        zip(
            ts.dataset["field_table"].values.tolist(),
            [str(v) for v in ts.dataset["field_source_id"].values],
            strict=True,
        )
    )
    some = int(np.flatnonzero(ts.fields > 0)[0])
    assert table[int(ts.fields[some])] == f"F{int(expected[rows[some], cols[some]]):03d}"
    # the summary names what was dropped and which classes have no samples
    text = " ".join(summary.warnings)
    assert "unknown codes dropped" in text and "'999'" in text
    assert "class 'other' is in the class map but has no samples" in text
    counts = summary.class_counts
    assert sum(counts["train"].values()) == summary.n_samples["train"]
    contract = ts.input_contract()
    assert contract.bands == ts.bands and contract.n_time == 3
    assert contract.class_map.names == ts.class_map.names


def test_norm_stats_come_from_the_training_split_only(
    scene: dict[str, object], tmp_path: Path
) -> None:
    west, south, east, north = GBOX.to_crs("EPSG:4326").extent.boundingbox[:4]
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  - {{split: val, bbox: [{west - 1}, {south - 1}, {(west + east) / 2}, "
        f"{north + 1}]}}\n  - stratified: {{train: 1.0, val: 0.0, test: 0.0}}\n"
    )
    summary = build_training_set(
        _params(scene, "stats", splits={"block_size_px": 16, "rules_path": str(rules)})
    )
    ts = open_training_set(summary.uri)
    g = ts.bands.index("green")
    x_train, _ = ts.arrays("train")
    x_val, _ = ts.arrays("val")
    assert len(x_val) > 0 and len(x_train) > 0
    # the precondition: train and val differ
    assert x_train[:, :, g].mean() - x_val[:, :, g].mean() > 50
    stats = ts.norm_stats["green"]
    assert stats.mean == pytest.approx(float(x_train[:, :, g].astype(np.float64).mean()), rel=1e-9)
    assert stats.std == pytest.approx(float(x_train[:, :, g].astype(np.float64).std()), rel=1e-6)
    assert stats.count == x_train[:, :, g].size
    all_mean = np.concatenate([x_train, x_val])[:, :, g].mean()
    assert abs(stats.mean - all_mean) > 10
    # class weights: inverse frequency on train, blended halfway to uniform (the default)
    train_counts = summary.class_counts["train"]
    assert ts.class_weights == pytest.approx(class_weights(train_counts, 0.5))
    present = {k: v for k, v in train_counts.items() if v}
    n, k = sum(present.values()), len(present)
    for name, c in present.items():
        assert ts.class_weights[name] == pytest.approx(0.5 * n / (k * c) + 0.5)


def test_writer_accumulates_statistics_of_train_rows_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    train = np.arange(n) < 600
    values = np.where(
        train[:, None, None], rng.normal(0, 1, (n, 2, 1)), rng.normal(50, 10, (n, 2, 1))
    ).astype(np.float32)
    values[5, 0, 0] = np.nan  # missing values are skipped
    meta = xr.Dataset(
        {"split": ("sample", np.where(train, 0, 1).astype(np.uint8))},
        coords={"band": ("band", np.array(["b"], dtype=object))},
    )
    writer = TrainingSetWriter(
        uri=tmp_path / "t.zarr",
        meta=meta,
        data_dims=("sample", "time", "band"),
        data_shape=values.shape,
        train_rows=train,
        bands=["b"],
    )
    for start in range(0, n, 128):
        writer.write(start, values[start : start + 128])
    stats = writer.norm_stats()["b"]
    expected = values[train].astype(np.float64)
    assert stats.count == np.isfinite(expected).sum() == 1199
    assert stats.mean == pytest.approx(np.nanmean(expected), rel=1e-9)
    assert stats.std == pytest.approx(np.nanstd(expected), rel=1e-9)
    writer.abort()
    assert not list(tmp_path.iterdir())


def test_patch_training_set_holds_the_right_windows(scene: dict[str, object]) -> None:
    summary = build_training_set(
        _params(
            scene,
            "patches",
            samples={"kind": "patch", "patch_size": 8},
            splits={"block_size_px": 16},
        )
    )
    ts = open_training_set(summary.uri)
    assert ts.kind == "patch" and ts.patch_size == 8
    data = ts.data.values  # (sample, time, band, py, px)
    red = ts.bands.index("red")
    rr, cc = np.mgrid[0:8, 0:8]
    for i, (r0, c0) in enumerate(
        zip(ts.dataset["row"].values, ts.dataset["col"].values, strict=True)
    ):
        assert np.array_equal(data[i, 0, red], (r0 + rr) * 1000 + (c0 + cc))
        lab = ts.labels[i]
        got = lab[lab != IGNORE_INDEX]
        want = _expected_class(
            scene, (r0 + rr)[lab != IGNORE_INDEX], (c0 + cc)[lab != IGNORE_INDEX]
        )
        assert np.array_equal(got, want)
    assert ts.input_contract().patch_size == 8


def test_field_pixel_sets_are_the_fields_pixels(scene: dict[str, object]) -> None:
    summary = build_training_set(_params(scene, "fields", samples={"kind": "field"}))
    ts = open_training_set(summary.uri)
    expected = scene["expected"]
    assert isinstance(expected, np.ndarray)
    red = ts.bands.index("red")
    table = dict(
        zip(
            ts.dataset["field_table"].values.tolist(),
            [str(v) for v in ts.dataset["field_source_id"].values],
            strict=True,
        )
    )
    codes = scene["codes"]
    assert isinstance(codes, dict)
    assert ts.n_samples == sum(c in CLASS_OF_CODE for c in codes.values()) == 13
    for i, f in enumerate(ts.fields.tolist()):
        pix = ts.field_pixels(i)[:, 0, red].astype(np.int64)
        rows, cols = pix // 1000, pix % 1000
        fid = int(table[f][1:])
        assert (expected[rows, cols] == fid).all()
        assert len(pix) == int((expected == fid).sum())
        assert ts.labels[i] == _expected_class(scene, rows[:1], cols[:1])[0]
    x, y = ts.arrays("train")
    assert len(x) == len(y) == int(ts.dataset["count"].values[ts.indices("train")].sum())


def test_rebuilding_replaces_atomically_and_a_failed_write_keeps_the_old_set(
    scene: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _params(scene, "atomic")
    first = build_training_set(params)
    before = open_training_set(first.uri).n_samples
    calls = {"n": 0}
    real = samples_module.read_window

    def failing(*args: object, **kwargs: object) -> np.ndarray:  # a disk fault mid-write
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(samples_module, "read_window", failing)
    monkeypatch.setattr(samples_module, "READ_BUDGET_BYTES", 2**12)  # many small windows
    with pytest.raises(OSError, match="disk full"):
        build_training_set(params)
    assert open_training_set(first.uri).n_samples == before
    leftovers = [p.name for p in Path(first.uri).parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_labels_outside_the_cube_and_bad_bands_are_refused(
    scene: dict[str, object], tmp_path: Path
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    far = gpd.GeoDataFrame(
        {"field_id": ["x"], "crop_code": [115]}, geometry=[box(2.0, 45.0, 2.01, 45.01)], crs=4326
    )
    far.to_file(tmp_path / "far.gpkg")
    params = _params(scene, "far")
    params.labels.path = str(tmp_path / "far.gpkg")
    with pytest.raises(LabelError, match="no label overlaps the cube") as err:
        build_training_set(params)
    assert err.value.hint
    with pytest.raises(DataError, match="swir16") as derr:
        build_training_set(_params(scene, "bands", samples={"bands": ["red", "swir16"]}))
    assert "red" in str(derr.value)


def test_open_training_set_refuses_other_stores(tmp_path: Path) -> None:
    xr.Dataset({"a": ("x", np.zeros(3))}).to_zarr(
        tmp_path / "other.zarr", zarr_format=3, consolidated=False
    )
    with pytest.raises(DataError, match="not a cropflow training set"):
        open_training_set(tmp_path / "other.zarr")
    with pytest.raises(DataError, match="not found"):
        open_training_set(tmp_path / "missing.zarr")


@pytest.mark.slow  # the Prefect test harness starts a server (~10-50 s on this machine)
@pytest.mark.usefixtures("prefect_harness")
def test_flow_builds_and_publishes_the_class_table(scene: dict[str, object]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.training_set import build_training_set_flow

    summary = build_training_set_flow(
        _params(scene, "flow", samples={"kind": "pixel"}, splits={"block_size_px": 16})
    )
    assert open_training_set(summary.uri).n_samples == sum(summary.n_samples.values())
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["training-set-classes"]))
        )
    assert artifacts
    rows = artifacts[-1].data
    assert "wheat" in str(rows) and "train" in str(rows)


def test_an_incomplete_cube_is_refused(scene: dict[str, object], tmp_path: Path) -> None:
    cube = write_cube(
        tmp_path / "partial.zarr",
        GBOX,
        TIMES,
        position_bands(GBOX, 3),
        attrs={"cropflow:complete": False},
    )
    params = _params(scene, "incomplete")
    params.cube_uri = str(cube)
    with pytest.raises(DataError, match="incomplete"):
        build_training_set(params)
