"""Tiled prediction on small cubes with real model families (untrained, seeded)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import torch
import xarray as xr
import zarr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, ContractError, DataError
from cropflow.predict import PredictParams, open_prediction, predict
from cropflow.predict.cube import read_window
from cropflow.predict.store import META_ATTR
from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube
from cropflow.predict.tiling import Window
from models.base import Batch

T, H, W = 4, 45, 57
BANDS = ("nir", "red", "green")
TRANSFORM = Affine(10, 0, 600000, 0, -10, 5200000)
CRS = "EPSG:32633"
DATES = ["2021-04-01", "2021-05-01", "2021-06-01", "2021-07-01"]
STATS = {"nir": (0.3, 0.1), "red": (0.1, 0.05), "green": (0.1, 0.04)}
CLASSES = ClassMap(
    classes=[
        ClassDef(id=1, name="wheat", color="#e6c619"),
        ClassDef(id=5, name="maize", color="#2ca02c"),
        ClassDef(id=9, name="grassland", color="#98df8a"),
    ]
)
LTAE = {
    "name": "ltae",
    "n_head": 2,
    "d_k": 4,
    "d_model": 8,
    "mlp_widths": [8],
    "decoder_widths": [8],
}
UNET = {"name": "unet", "depth": 2, "base_width": 4}
FIELD = {
    "name": "field_bigru",
    "conv_widths": [4],
    "kernel_sizes": [3],
    "norm_groups": 2,
    "hidden_size": 8,
    "num_layers": 1,
}


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cube with smooth values, a nodata block and a missing date at some pixels."""
    rng = np.random.default_rng(7)
    data = {}
    for band, (mean, std) in STATS.items():
        data[band] = mean + std * smooth_noise((T, H, W), rng, sigma=2.5)
        data[band][:, 3:6, 40:44] = np.nan  # no data at all: no prediction
        data[band][1, 20:23, 10:14] = np.nan  # one date missing: still predicted
    return write_cube(tmp_path_factory.mktemp("cube") / "small.zarr", data, DATES, TRANSFORM, CRS)


def _load(store: str) -> xr.Dataset:
    return open_prediction(store).load()


def test_pixel_model_tiled_equals_untiled_and_the_model_itself(cube: Path) -> None:
    bundle = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", stats=STATS, gain=2)
    tiled = predict(
        PredictParams(cube=str(cube), key="px-tiled", tile_size=16, executor="local"), bundle
    )
    whole = predict(
        PredictParams(cube=str(cube), key="px-whole", tile_size=64, executor="local"), bundle
    )
    assert (tiled.tiles_total, whole.tiles_total) == (3 * 4, 1)
    a, b = _load(tiled.store), _load(whole.store)
    for var in ("class_id", "probability", "confidence"):
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
    assert list(a["class"].values) == CLASSES.names
    assert list(a["class_value"].values) == CLASSES.ids

    # the model applied directly to the cube, with the contract's normalisation
    ds = xr.open_zarr(cube, consolidated=False)
    raw = np.stack([ds[b].values for b in ("nir", "red")], axis=-1)  # [T, H, W, C]
    series = raw.transpose(1, 2, 0, 3).reshape(H * W, T, 2)
    mean = np.array([STATS["nir"][0], STATS["red"][0]], np.float32)
    std = np.array([STATS["nir"][1], STATS["red"][1]], np.float32)
    x = np.nan_to_num((series - mean) / std)
    pad = np.isnan(series).all(axis=2)
    doy = pd.DatetimeIndex(DATES).dayofyear.to_numpy()
    with torch.no_grad():
        logits = bundle.model(
            Batch(
                x=torch.from_numpy(x),
                dates=torch.from_numpy(np.tile(doy, (H * W, 1))),
                pad_mask=torch.from_numpy(pad),
            )
        ).logits
    probs = torch.softmax(logits, 1).numpy()
    expected = np.asarray(CLASSES.ids)[probs.argmax(1)].reshape(H, W)
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0] > 1e-3).reshape(H, W)
    nodata = pad.all(axis=1).reshape(H, W)
    got = a["class_id"].values
    assert (got[nodata] == 255).all() and nodata.sum() == 3 * 4
    assert (got[clear & ~nodata] == expected[clear & ~nodata]).all()
    p8 = np.rint(probs.T.reshape(3, H, W) * 255)
    assert np.abs(a["probability"].values[:, ~nodata] - p8[:, ~nodata]).max() <= 1
    assert len(np.unique(got[~nodata])) > 1  # a map, not a constant


def _fields_file(folder: Path) -> Path:
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    polys = {
        "a": shapely.box(x0 + 20, y0 - 150, x0 + 140, y0 - 30),
        "b": shapely.Polygon(
            [(x0 + 200, y0 - 100), (x0 + 400, y0 - 60), (x0 + 380, y0 - 300), (x0 + 210, y0 - 280)]
        ),
        "c": shapely.box(x0 + 300, y0 - 440, x0 + 560, y0 - 330),
        "outside": shapely.box(x0 - 500, y0 + 100, x0 - 300, y0 + 300),
    }
    path = folder / "fields.gpkg"
    gdf = gpd.GeoDataFrame({"parcel": list(polys)}, geometry=list(polys.values()), crs=CRS)
    gdf.to_crs("EPSG:4326").to_file(path)  # another CRS: reprojected on reading
    return path


@pytest.mark.slow
def test_dask_workers_give_the_same_maps_as_this_process(cube: Path, tmp_path: Path) -> None:
    """Pixel and field models (a GRU: sent as config + weights, not pickled) on the
    LocalCluster of the settings (2 worker processes)."""
    from cropflow.cube.cluster import dask_client

    fields = _fields_file(tmp_path)
    pixel = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", stats=STATS)
    field = tiny_bundle(FIELD, ["nir", "red"], T, CLASSES, "field", stats=STATS, gain=2)
    common = {"cube": str(cube), "tile_size": 16}
    with_fields = {"fields": str(fields), "field_id_column": "parcel"}
    local_px = predict(PredictParams(key="dk-px-local", executor="local", **common), pixel)
    local_f = predict(
        PredictParams(key="dk-f-local", executor="local", **common, **with_fields), field
    )
    seen: list[tuple[int, int]] = []
    with dask_client():  # predict finds and uses this cluster
        dask_px = predict(
            PredictParams(key="dk-px", executor="dask", **common),
            pixel,
            on_progress=lambda d, n: seen.append((d, n)),
        )
        dask_f = predict(PredictParams(key="dk-f", executor="dask", **common, **with_fields), field)
    assert dask_px.executor == dask_f.executor == "dask"
    assert seen[0] == (0, 12) and seen[-1] == (12, 12) and len(seen) == 13
    for a, b in ((local_px, dask_px), (local_f, dask_f)):
        x, y = _load(a.store), _load(b.store)
        for var in ("class_id", "probability", "confidence"):
            np.testing.assert_array_equal(x[var].values, y[var].values, err_msg=var)
    assert (_load(dask_f.store)["class_id"].values != 255).sum() > 100


def _border_disagreement(probs: np.ndarray, cuts: list[int], axis: int) -> float:
    """Mean |p(i) - p(i-1)| across the given cuts along ``axis`` (probabilities 0..1)."""
    p = probs.astype(np.float64) / 255.0
    diffs = [np.abs(np.take(p, c, axis=axis) - np.take(p, c - 1, axis=axis)).mean() for c in cuts]
    return float(np.mean(diffs))


def test_patch_blending_leaves_smaller_seams_than_side_by_side_patches(cube: Path) -> None:
    patch = 16
    bundle = tiny_bundle(UNET, ["nir", "red", "green"], T, CLASSES, "patch", patch, STATS)
    common = {"cube": str(cube), "tile_size": 32, "executor": "local"}
    plain = predict(PredictParams(key="pt-plain", patch_overlap=0.0, **common), bundle)
    hann = predict(PredictParams(key="pt-hann", patch_overlap=0.5, **common), bundle)
    p_plain = _load(plain.store)["probability"].values
    p_hann = _load(hann.store)["probability"].values

    def seams(p: np.ndarray, cuts: list[int]) -> float:
        return _border_disagreement(p, cuts, 2) + _border_disagreement(p, cuts, 1)

    edges = [16, 32]  # where side-by-side patches (stride 16) meet
    middles = [8, 24]  # inside those patches: the map's own pixel-to-pixel variation
    seam_plain, inner_plain = seams(p_plain, edges), seams(p_plain, middles)
    seam_hann, inner_hann = seams(p_hann, edges), seams(p_hann, middles)
    assert seam_plain > 2 * inner_plain  # zero-padded convolutions leave seams
    assert seam_hann < 0.5 * seam_plain, (seam_hann, seam_plain)
    assert seam_hann < 1.5 * inner_hann, (seam_hann, inner_hann)  # no seam left

    # tiles are invisible: patches lie on one grid for the whole region
    whole = predict(
        PredictParams(key="pt-whole", patch_overlap=0.5, **{**common, "tile_size": 64}), bundle
    )
    np.testing.assert_array_equal(_load(whole.store)["probability"].values, p_hann)


def test_auto_tiles_are_larger_for_patch_models_with_long_strides(cube: Path) -> None:
    """tile_size "auto": 256 px for pixel models and 32 px patches, 512 px for 64 px patches
    (half-patch overlap: a 32 px stride); the map does not depend on the tiling."""
    big = tiny_bundle(UNET, list(BANDS), T, CLASSES, "patch", 64, STATS)
    small = tiny_bundle(UNET, list(BANDS), T, CLASSES, "patch", 32, STATS)
    pixel = tiny_bundle(LTAE, list(BANDS), T, CLASSES, "pixel", stats=STATS)
    common = {"cube": str(cube), "executor": "local"}
    sides = {}
    for name, bundle in {"big": big, "small": small, "pixel": pixel}.items():
        res = predict(PredictParams(key=f"auto-{name}", **common), bundle)
        sides[name] = _load(res.store).attrs[META_ATTR]["tile_size"]
    assert sides == {"big": 512, "small": 256, "pixel": 256}
    auto = predict(PredictParams(key="auto-big", **common), big)
    tiled = predict(PredictParams(key="tiled-big", tile_size=16, **common), big)
    assert auto.tiles_total == 1 and tiled.tiles_total == 12
    np.testing.assert_array_equal(
        _load(tiled.store)["probability"].values, _load(auto.store)["probability"].values
    )


def test_field_model_predicts_per_field_and_paints_its_pixels(cube: Path, tmp_path: Path) -> None:
    path = _fields_file(tmp_path)
    bundle = tiny_bundle(FIELD, ["nir", "red"], T, CLASSES, "field", stats=STATS, gain=2)
    res = predict(
        PredictParams(
            cube=str(cube),
            key="fields",
            tile_size=16,
            executor="local",
            fields=str(path),
            field_id_column="parcel",
        ),
        bundle,
    )
    assert res.tiles_total == 1 + 12  # one field group, then 12 tiles painted
    ds = _load(res.store)
    cls, probs = ds["class_id"].values, ds["probability"].values
    from rasterio.features import rasterize

    as_read = gpd.read_file(path).to_crs(CRS).set_index("parcel").geometry
    has_data = ~np.isnan(xr.open_zarr(cube, consolidated=False)["nir"].values).all(axis=0)
    for name in ("a", "b", "c"):
        inside = rasterize([(as_read[name], 1)], out_shape=(H, W), transform=TRANSFORM) == 1
        inside &= has_data
        assert inside.sum() > 10
        assert len(np.unique(cls[inside])) == 1, name  # one class per field
        assert len(np.unique(probs[:, inside], axis=1).T) == 1, name
        k = int(np.argmax(probs[:, inside][:, 0]))
        assert cls[inside][0] == CLASSES.ids[k]
    covered = rasterize([(g, 1) for g in as_read], out_shape=(H, W), transform=TRANSFORM)
    assert (cls[covered == 0] == 255).all()
    assert (cls[covered == 1] != 255).sum() > 100


def test_band_mismatch_is_refused_before_any_tile_is_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {b: rng.random((T, 20, 20), np.float32) for b in ("red", "green", "blue")}
    cube = write_cube(tmp_path / "rgb.zarr", data, DATES, TRANSFORM, CRS)
    # corrupt every chunk of every band: any read of pixels would now fail to decode
    chunks = [p for b in data for p in (cube / b / "c").rglob("*") if p.is_file()]
    assert chunks
    for p in chunks:
        p.write_bytes(b"not a zstd frame")
    with pytest.raises(Exception, match=r"(?i)zstd|decompress|codec|frame|error"):
        read_window(str(cube), ["red"], Window(0, 20, 0, 20))

    bundle = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", stats=STATS)
    params = PredictParams(cube=str(cube), key="mismatch", executor="local")
    with pytest.raises(ContractError) as err:
        predict(params, bundle)
    msg = str(err.value)
    assert "['nir', 'red']" in msg  # the model's bands ...
    assert all(f"'{b}'" in msg.split("data has")[1] for b in data)  # ... and the cube's
    assert "missing ['nir']" in msg and err.value.hint
    from cropflow.settings import get_settings

    assert not (get_settings().workdir / "predictions" / "mismatch").exists()


def test_other_contract_mismatches_are_refused(cube: Path, tmp_path: Path) -> None:
    wrong_time = tiny_bundle(LTAE, ["nir", "red"], T + 2, CLASSES, "pixel", stats=STATS)
    with pytest.raises(ContractError, match="6 time steps"):
        predict(PredictParams(cube=str(cube), executor="local"), wrong_time)
    field_model = tiny_bundle(FIELD, ["nir"], T, CLASSES, "field", stats=STATS)
    with pytest.raises(ConfigError, match="field polygons"):
        predict(PredictParams(cube=str(cube), executor="local"), field_model)
    with pytest.raises(DataError, match="no cube at"):
        predict(PredictParams(cube=str(tmp_path / "nope.zarr")), field_model)
    with pytest.raises(ConfigError, match=r"field polygons .* not found"):
        predict(
            PredictParams(cube=str(cube), fields=str(tmp_path / "none.gpkg"), executor="local"),
            field_model,
        )


def test_rerun_skips_done_tiles_and_another_model_starts_afresh(cube: Path) -> None:
    a = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", stats=STATS, seed=1)
    first = predict(PredictParams(cube=str(cube), key="rerun", tile_size=16, executor="local"), a)
    again = predict(PredictParams(cube=str(cube), key="rerun", tile_size=16, executor="local"), a)
    assert (first.tiles_predicted, first.tiles_skipped) == (12, 0)
    assert (again.tiles_predicted, again.tiles_skipped) == (0, 12)
    b = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", stats=STATS, seed=2)
    other = predict(PredictParams(cube=str(cube), key="rerun", tile_size=16, executor="local"), b)
    assert (other.tiles_predicted, other.tiles_skipped) == (12, 0)
    assert other.model.identity != first.model.identity
    # another model's prediction has its own store: the first one is untouched
    assert other.store != first.store and other.fingerprint != first.fingerprint
    assert zarr.open_group(first.store, mode="r").attrs.asdict()["cropflow:prediction"]["complete"]
    meta = zarr.open_group(other.store, mode="r").attrs.asdict()["cropflow:prediction"]
    assert meta["complete"] is True


def test_windows_read_as_stored_equal_what_xarray_decodes(cube: Path) -> None:
    """The fast path (zarr arrays as stored) gives exactly xarray's values, NaN included, and
    a band that needs decoding (scale_factor) goes through xarray."""
    from cropflow.predict.cube import _raw_arrays

    bands = list(STATS)
    window = Window(2, 30, 5, 47)
    fast = read_window(str(cube), bands, window)
    assert set(bands) <= set(_raw_arrays(str(cube), (cube / "zarr.json").stat().st_mtime_ns))
    ds = xr.open_zarr(cube, consolidated=False)
    slow = np.stack(
        [ds[b].transpose("time", "y", "x").values[:, 2:30, 5:47] for b in bands], axis=1
    )
    np.testing.assert_array_equal(fast, slow)
    assert np.isnan(fast).any(), "the window holds the nodata block"


def test_a_band_stored_with_a_scale_is_read_decoded(cube: Path, tmp_path: Path) -> None:
    import shutil

    from cropflow.predict.cube import _raw_arrays

    copy = tmp_path / "scaled.zarr"
    shutil.copytree(cube, copy)
    band = next(iter(STATS))
    zarr.open_array(copy / band, mode="r+").attrs["scale_factor"] = 2.0
    (copy / "zarr.json").touch()  # a rewritten store: caches see a new stamp
    assert band not in _raw_arrays(str(copy), (copy / "zarr.json").stat().st_mtime_ns)
    window = Window(0, 10, 0, 10)
    got = read_window(str(copy), [band], window)
    want = read_window(str(cube), [band], window)
    np.testing.assert_allclose(got, 2.0 * want)


# ---------------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------------


def test_every_tta_view_is_undone_and_the_eight_views_differ() -> None:
    from cropflow.predict.model import TTA_VIEWS, _unview, _view

    a = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    for name, views in TTA_VIEWS.items():
        for turns, flip in views:
            torch.testing.assert_close(_unview(_view(a, turns, flip), turns, flip), a), name
    square = torch.arange(16.0).reshape(4, 4)
    seen = {tuple(_view(square, k, f).flatten().tolist()) for k, f in TTA_VIEWS["dihedral"]}
    assert len(seen) == 8
    flips = {tuple(_view(square, k, f).flatten().tolist()) for k, f in TTA_VIEWS["flips"]}
    want = {
        tuple(v.flatten().tolist())
        for v in (square, square.flip(-1), square.flip(-2), square.flip(-1).flip(-2))
    }
    assert flips == want


class _PerPixel(torch.nn.Module):
    """Logits from each pixel's own series (a 1x1 convolution): equivariant to any view."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, classes, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        b, t, c, h, w = batch.x.shape
        out: torch.Tensor = self.conv(batch.x.reshape(b, t * c, h, w))
        return out


def test_tta_averages_the_views_mapped_back() -> None:
    from cropflow.predict.model import TTA_VIEWS, _unview, _view, augmented_probs, forward_probs

    torch.manual_seed(0)
    x = torch.randn(2, T, len(BANDS), 12, 9)
    batch = Batch.dense(x)
    exact = _PerPixel(T * len(BANDS), 3).eval()
    with torch.no_grad():
        for tta in ("flips", "dihedral"):
            torch.testing.assert_close(
                augmented_probs(exact, batch, tta), forward_probs(exact, batch)
            )
        bundle = tiny_bundle(UNET, list(BANDS), T, CLASSES, "patch", 16, STATS)
        unet = bundle.model.eval()
        got = augmented_probs(unet, batch, "dihedral")
        manual = torch.stack(
            [
                _unview(forward_probs(unet, Batch.dense(_view(x, k, f))), k, f)
                for k, f in TTA_VIEWS["dihedral"]
            ]
        ).mean(0)
        torch.testing.assert_close(got, manual)
        plain = forward_probs(unet, batch)
    assert not torch.allclose(got, plain, atol=1e-4), "zero-padded convolutions are not equivariant"
    torch.testing.assert_close(got.sum(1), torch.ones(2, 12, 9))


def test_tta_predictions_are_their_own_maps_and_pixel_models_refuse_it(cube: Path) -> None:
    bundle = tiny_bundle(UNET, list(BANDS), T, CLASSES, "patch", 16, STATS)
    common = {"cube": str(cube), "tile_size": 32, "executor": "local", "patch_overlap": 0.5}
    plain = predict(PredictParams(key="tta-none", **common), bundle)
    flips = predict(PredictParams(key="tta-flips", tta="flips", **common), bundle)
    p_plain = _load(plain.store)["probability"].values
    p_flips = _load(flips.store)["probability"].values
    valid = np.isfinite(p_plain).all(axis=0) & (p_plain.sum(axis=0) > 0)
    assert valid.mean() > 0.9
    assert np.abs(p_flips - p_plain)[:, valid].mean() > 1e-3, "the views changed the map"
    meta = _load(flips.store).attrs[META_ATTR]
    assert meta["tta"] == "flips" and _load(plain.store).attrs[META_ATTR]["tta"] == "none"
    assert meta["fingerprint"] != _load(plain.store).attrs[META_ATTR]["fingerprint"]

    pixel = tiny_bundle(LTAE, list(BANDS), T, CLASSES, "pixel", None, STATS)
    with pytest.raises(ConfigError, match="pixel model") as err:
        predict(PredictParams(key="tta-pixel", tta="flips", **common), pixel)
    assert "tta='none'" in str(err.value.hint)


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 5),
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_prepared_pixels_equal_the_normalised_series_of_the_valid_pixels(
    t: int, c: int, h: int, w: int, seed: int
) -> None:
    """The row-by-row transpose and the in-place normalisation give what the training
    normalisation gives on ``[N, T, C]`` series, non-finite values (NaN and inf) as 0."""
    from cropflow.bands import S2_TEN_BANDS
    from cropflow.predict.engine import prepare_pixels
    from cropflow.predict.model import Normalise

    rng = np.random.default_rng(seed)
    raw = rng.normal(0.2, 0.1, (t, c, h, w)).astype(np.float32)
    raw[rng.random(raw.shape) < 0.2] = np.nan
    raw[rng.random((t, 1, h, w)).repeat(c, axis=1) < 0.3] = np.nan  # whole dates missing
    raw[rng.random(raw.shape) < 0.05] = np.inf
    bands = list(S2_TEN_BANDS[:c])
    stats = {b: (0.1 * i, 0.05 + 0.01 * i) for i, b in enumerate(bands)}
    bundle = tiny_bundle({"name": "tempcnn"}, bands, t, CLASSES, "pixel", stats=stats)
    norm = Normalise(bundle.contract)

    series = raw.reshape(t, c, h * w).transpose(2, 0, 1).copy()  # [N, T, C]
    missing = ~np.isfinite(series).any(axis=2)
    valid = ~missing.all(axis=1)
    got = prepare_pixels(raw.copy(), norm)

    assert np.array_equal(got.valid, valid.reshape(h, w))
    assert np.array_equal(got.missing, missing[valid])
    assert got.x.flags.c_contiguous and got.x.dtype == np.float32
    assert np.array_equal(got.x, norm(series)[valid])

    # a patch model's window: normalised in place, as the copying normalisation does it
    from cropflow.predict.engine import prepare_patches

    own = raw.copy()
    patches = prepare_patches(own, norm)
    assert patches.x is own  # no second window-sized array
    assert np.array_equal(patches.x, norm(raw[None])[0])
    assert np.array_equal(patches.missing, ~np.isfinite(raw).any(axis=1))


def test_a_store_made_again_at_the_same_path_is_written_as_the_new_one(
    cube: Path, tmp_path: Path
) -> None:
    """Tile writes reuse opened arrays per store; a store replaced at the same path (another
    class map) is opened again, not written through the old one's metadata."""
    from cropflow.predict.store import create_store, discard, write_tile

    store = tmp_path / "pred.zarr"
    win = Window(0, 16, 0, 16)
    for k in (3, 2, 3):
        classes = ClassMap(classes=CLASSES.classes[:k])
        discard(store)
        create_store(store, str(cube), classes, 16, {})
        prob = np.full((k, 16, 16), 7 * k, np.uint8)
        write_tile(store, win, np.full((16, 16), k, np.uint8), prob, prob[0])
        got = zarr.open_array(f"{store}/probability", mode="r")
        assert got.shape[0] == k
        assert np.array_equal(got[:, :16, :16], prob)
        assert np.all(np.asarray(zarr.open_array(f"{store}/class_id", mode="r")[:16, :16]) == k)
