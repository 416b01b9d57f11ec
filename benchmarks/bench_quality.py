"""Model quality on real data, defaults only: every pixel family next to a random forest and
histogram gradient boosting, fit in the same run on the same splits.

Data sets (real ones from ``../shared/fixtures/real/``):

* ``temporalcnn``: 260 + 260 Formosat-2 pixel series (149 dates x NIR, R, G; 13 classes),
  imported with :func:`cropflow.labels.build.import_sample_tables` (val carved from train by
  polygon, as a user's import does);
* ``temporalcnn-ndvi``: the same pixels as one band, NDVI = (NIR - R) / (NIR + R), written as
  a one-band table and imported the same way: the most common real input (one index series);
* ``temporalcnn-25`` (opt-in with ``--sets``): the same pixels and bands at every 6th date
  (25 dates, about one a fortnight): a series of middling length;
* ``modis-ndvi``: the real MODIS NDVI cube of ``real/sits/`` (12 dates of 2013-14, 232 m,
  sinusoidal projection) sampled at its 18 labelled points (Mato Grosso: Soy_Corn 8, Pasture
  4, Forest 3, Cerrado 3), each point with the 3 x 3 pixels around it (162 series of 12 dates,
  one band, the real dates). With so few points, each seed is one of 3 folds of the points
  (stratified by class; every class in each test fold; seeds 3-5 a second partition, and so
  on): a network trains with the seed's
  number on the other two folds (val carved from them by point) and is scored on its fold;
  the forest and HGB are fit on the same two folds. The mean over seeds is a 3-fold spatial
  cross-validation by point. Caveat: the 8 neighbours take the point's label (at 232 m a 3 x
  3 window is 700 m across; fields and forest patches there are larger, but not all);
* ``demo`` (opt-in with ``--sets``, synthetic): the demo region's pixel training set (monthly
  cube of 8 steps x 11 variables, spatial blocks of 16 px), built as
  :mod:`benchmarks.bench_demo_quality` builds it.

Each family is trained with :func:`cropflow.train.train` and nothing but ``{"name": family}``
(every other option at its default), for ``--seeds`` seeds; the table gives the mean and the
spread (min-max) over seeds on the given test split. With the default ``refit="auto"`` these
small pixel sets are refit on train + val after early stopping; the table also gives the
test macro F1 of the model selected on val before its refit (the same run). The forest (500
trees) and gradient boosting (scikit-learn defaults) are fit on train + val (they need no
validation split), so the comparison does not favour the networks.

Run: ``python -m benchmarks.bench_quality [--seeds 3] [--families tempcnn,ltae,...]
[--json PATH]``; prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from benchmarks.common import isolated_workdir, train_family

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TCNN = FIXTURES / "real" / "temporalcnn"
SITS = FIXTURES / "real" / "sits"
#: Sets whose seed also picks the fold of the points that is tested (see the module's doc).
FOLDED_SETS = ("modis-ndvi",)
FAMILIES = ("tempcnn", "ltae", "crop_mask_lstm")
#: Training options compared with the defaults (``--variants``): each overrides the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "epochs=30 (no min_steps)": {"epochs": 30},
    "class_weighting=none": {"class_weighting": "none"},
    "date_dropout=0.3": {"augment": {"date_dropout": 0.3}},
    "noise_std=0.1": {"augment": {"noise_std": 0.1}},
    "average_epochs=2": {"average_epochs": 2.0},
    "average_epochs=5": {"average_epochs": 5.0},
    "weight_decay=1e-2": {"weight_decay": 1e-2},
    "label_smoothing=0.1": {"label_smoothing": 0.1},
    "batch_size=32": {"batch_size": 32},
    # model options (merged into the family's config): for the family they belong to
    "model.d_model=128": {"model": {"d_model": 128}},
    "model.input_widths=32-64-128": {"model": {"input_widths": [32, 64, 128]}},
    "model.input_widths=32-64-128 input_norm=layer": {
        "model": {"input_widths": [32, 64, 128], "input_norm": "layer"}
    },
    "model.input_widths=64": {"model": {"input_widths": [64]}},
    "model.input_widths=": {"model": {"input_widths": []}},
    "model.dropout=0.5": {"model": {"dropout": 0.5}},
    "model.bidirectional": {"model": {"bidirectional": True}},
    "model.hidden_size=64": {"model": {"hidden_size": 64}},
    "model.hidden_size=256": {"model": {"hidden_size": 256}},
    "model.num_layers=2": {"model": {"num_layers": 2}},
    "lr=3e-3": {"lr": 3e-3},
    "lr=3e-4": {"lr": 3e-4},
    "model.pooling=mean_max": {"model": {"pooling": "mean_max"}},
    "model.num_global_layers=2": {"model": {"num_global_layers": 2}},
    "model.windows=6": {"model": {"windows": 6}},
    "model.conv_kernel=0": {"model": {"conv_kernel": 0}},
    "model.conv_kernel=3": {"model": {"conv_kernel": 3}},
    "model.conv_kernel=5": {"model": {"conv_kernel": 5}},
    "model.conv_kernel=7": {"model": {"conv_kernel": 7}},
    "model.conv_kernel=5 num_layers=2": {"model": {"conv_kernel": 5, "num_layers": 2}},
    "model.conv_kernel=5 num_global_layers=2": {
        "model": {"conv_kernel": 5, "num_global_layers": 2}
    },
    "refit=never": {"refit": "never"},
}
METRICS = ("overall_accuracy", "macro_f1", "kappa")


def _read_fixture(source: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A temporalCNN table as its (class, polygon) columns and its values ``[N, T, 3]`` (NIR,
    R, G per date)."""
    raw = np.loadtxt(source, delimiter=",", dtype=np.float64)
    return raw[:, :2], raw[:, 2:].reshape(len(raw), -1, 3)


def _write_table(
    dest: Path, head: npt.NDArray[np.float64], values: npt.NDArray[np.float64], fmt: str
) -> Path:
    table = np.concatenate([head, values.reshape(len(values), -1)], axis=1)
    np.savetxt(dest, table, delimiter=",", fmt=["%d", "%d"] + [fmt] * (table.shape[1] - 2))
    return dest


def ndvi_table(source: Path, dest: Path) -> Path:
    """The temporalCNN table (class, polygon, then NIR, R, G per date) as one NDVI band."""
    head, values = _read_fixture(source)
    nir, red = values[..., 0], values[..., 1]
    return _write_table(dest, head, (nir - red) / np.maximum(nir + red, 1e-6), "%.5f")


def thinned_table(source: Path, dest: Path, every: int) -> Path:
    """The temporalCNN table with every ``every``-th date only (first date kept): a shorter
    series of the same pixels and bands."""
    head, values = _read_fixture(source)
    return _write_table(dest, head, values[:, ::every, :], "%.6g")


def modis_table(dest: Path, fold: int, n_folds: int = 3, window: int = 3) -> Path:
    """The sits MODIS NDVI cube at its labelled points (``window`` x ``window`` pixels each)
    as a long table (sample, point, label, split, date, ndvi); the points of ``fold`` (of
    ``n_folds``, dealt out per class in file order; ``fold`` >= ``n_folds`` deals a shuffled
    order, another partition) are the test split."""
    import pandas as pd
    import rasterio
    from pyproj import Transformer

    files = sorted((SITS / "mod13q1").glob("*.jp2"))
    dates = [f.stem.rsplit("_", 1)[1] for f in files]
    layers = []
    for f in files:
        with rasterio.open(f) as src:
            layers.append(src.read(1).astype(np.float32) * 1e-4)
            crs, transform = src.crs, src.transform
    cube = np.stack(layers)  # [T, H, W]
    points = pd.read_csv(SITS / "samples_sinop_crop.csv")
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs, ys = to_grid.transform(points["longitude"].to_numpy(), points["latitude"].to_numpy())
    rows, cols = rasterio.transform.rowcol(transform, xs, ys)
    # seeds 0-2: the points of each class dealt out in file order; each further 3 seeds
    # deal them again in a shuffled order (another partition of the same points)
    order = np.random.default_rng(fold // n_folds).permutation(len(points))
    dealt = points.iloc[order if fold >= n_folds else np.arange(len(points))]
    fold_of = (dealt.groupby("label").cumcount() % n_folds).sort_index().to_numpy()
    fold %= n_folds
    half = window // 2
    height, width = cube.shape[1:]
    rows_a, cols_a = np.asarray(rows), np.asarray(cols)
    outside = (
        (rows_a < half) | (rows_a >= height - half) | (cols_a < half) | (cols_a >= width - half)
    )
    if outside.any():
        raise ValueError(
            f"points {points['id'][outside].tolist()} lie within {half} px of the MODIS raster's "
            f"edge ({height} x {width} px): their {window} x {window} windows would wrap; use a "
            "smaller window or drop these points"
        )
    records = []
    for p, (row, col) in enumerate(zip(rows, cols, strict=True)):
        split = "test" if fold_of[p] == fold else "train"
        for dr in range(-half, half + 1):
            for dc in range(-half, half + 1):
                sample = f"{points['id'][p]}_{dr + half}{dc + half}"
                for t, date in enumerate(dates):
                    records.append(
                        (
                            sample,
                            int(points["id"][p]),
                            points["label"][p],
                            split,
                            date,
                            float(cube[t, row + dr, col + dc]),
                        )
                    )
    columns = ["sample", "point", "label", "split", "date", "ndvi"]
    pd.DataFrame.from_records(records, columns=columns).to_csv(dest, index=False)
    return dest


MODIS_LEGEND = (
    "value,class,colour\n1,Soy_Corn,#ff3333\n2,Pasture,#ffff00\n3,Forest,#008c00\n"
    "4,Cerrado,#a0c080\n"
)


def import_set(name: str, work: Path, seed: int = 0) -> str:
    """Import a data set as a cropflow training set (val carved from train by polygon with
    ``seed``; for a folded set, ``seed`` is also the test fold); returns its URI."""
    from cropflow.labels.build import TableImportParams, import_sample_tables
    from cropflow.labels.tables import SampleTableParams

    if name == "modis-ndvi":
        legend = work / "modis_legend.csv"
        legend.write_text(MODIS_LEGEND)
        table = modis_table(work / f"modis_fold{seed}.csv", fold=seed)
        return import_sample_tables(
            TableImportParams(
                table=SampleTableParams(
                    files={"all": str(table)},
                    legend_path=str(legend),
                    bands=["ndvi"],
                    layout="long",
                    header=True,
                    class_column="label",
                    field_column="point",
                    split_column="split",
                    id_column="sample",
                    date_column="date",
                    val_fraction=0.2,
                    seed=seed,
                ),
                out_uri=str(work / f"{name}-fold{seed}.zarr"),
            )
        ).uri

    if name == "demo":  # the demo region's pixel set, spatial blocks of 16 px (synthetic)
        from benchmarks.bench_demo_quality import prepare

        return str(prepare(work, 16, 64, 16, ["pixel"])["sets"]["pixel"].uri)
    if name == "temporalcnn":
        files = {"train": TCNN / "train_dataset.csv", "test": TCNN / "test_dataset.csv"}
        bands = ["nir", "red", "green"]
    elif name == "temporalcnn-25":
        files = {
            split: thinned_table(TCNN / f"{split}_dataset.csv", work / f"{split}_25.csv", 6)
            for split in ("train", "test")
        }
        bands = ["nir", "red", "green"]
    elif name == "temporalcnn-ndvi":
        files = {
            split: ndvi_table(TCNN / f"{split}_dataset.csv", work / f"{split}_ndvi.csv")
            for split in ("train", "test")
        }
        bands = ["ndvi"]
    else:
        raise ValueError(f"unknown data set {name!r}")
    summary = import_sample_tables(
        TableImportParams(
            table=SampleTableParams(
                files={k: str(v) for k, v in files.items()},
                legend_path=str(TCNN / "class_map.txt"),
                bands=bands,
                class_id_offset=1,
                val_fraction=0.2,
                seed=seed,
            ),
            out_uri=str(work / f"{name}.zarr"),
        )
    )
    return summary.uri


def _flat(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.nan_to_num(x.reshape(len(x), -1))


def baselines(uris: dict[int, str]) -> list[dict[str, Any]]:
    """Random forest and gradient boosting on train + val, scored on test (one fit per seed,
    on that seed's set)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from cropflow.train.data import load_training_data
    from cropflow.train.metrics import evaluate_labels

    rows = []
    factories: dict[str, Callable[[int], Any]] = {
        "random forest, 500 trees": lambda s: RandomForestClassifier(500, random_state=s),
        "gradient boosting (HGB)": lambda s: HistGradientBoostingClassifier(random_state=s),
    }
    for label, make in factories.items():
        runs = []
        t0 = time.perf_counter()
        for seed, uri in uris.items():
            data = load_training_data(uri)
            x = np.concatenate([_flat(data.splits[p].x) for p in ("train", "val")])
            y = np.concatenate([data.splits[p].y for p in ("train", "val")])
            test = data.splits["test"]
            model = make(seed).fit(x, y)
            pred = model.predict(_flat(test.x))
            ev = evaluate_labels(test.y, pred, data.class_map.names, "test")
            runs.append(ev.summary())
        rows.append(_row(label, runs, time.perf_counter() - t0, baseline=True))
        print(f"  {label}: macro F1 {rows[-1]['macro_f1']:.3f}", flush=True)
    return rows


def networks(
    uris: dict[int, str], families: list[str], variant: str = "defaults"
) -> list[dict[str, Any]]:
    """Each family at its defaults (with ``variant``'s overrides), one training per seed on
    that seed's set."""
    rows = []
    for family in families:
        runs, epochs, selected = [], [], []
        t0 = time.perf_counter()
        for seed, uri in uris.items():
            options = dict(VARIANTS[variant])
            result = train_family(uri, family, seed, model=options.pop("model", {}), **options)
            runs.append(result.test)
            refit = "" if result.refit_epochs is None else f"+{result.refit_epochs}"
            epochs.append(f"{result.epochs_run}({result.best_epoch}){refit}")
            if result.selection_test:  # the model selected on val, before its refit
                selected.append(result.selection_test["macro_f1"])
        label = family if variant == "defaults" else f"{family}, {variant}"
        row = _row(label, runs, time.perf_counter() - t0, baseline=False)
        row["epochs"] = " ".join(epochs)
        if len(selected) == len(runs):
            row["selected_macro_f1"] = float(np.mean(selected))
        rows.append(row)
        print(f"  {label}: macro F1 {row['macro_f1']:.3f} [{epochs}]", flush=True)
    return rows


def _row(name: str, runs: list[dict[str, float]], seconds: float, baseline: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "baseline": baseline, "seconds": seconds}
    for m in METRICS:
        values = [float(r[m]) for r in runs]
        row[m] = float(np.mean(values))
        row[f"{m}_min"], row[f"{m}_max"] = min(values), max(values)
        row[f"{m}_runs"] = values  # per seed (fold), for paired comparisons
    return row


def markdown(results: dict[str, list[dict[str, Any]]], info: str, n_seeds: int) -> str:
    out = [
        "## Quality on real data, defaults only (`python -m benchmarks.bench_quality`)",
        "",
        info,
        "",
        f'Test split; mean over {n_seeds} seeds (min-max). Networks: `{{"name": family}}` '
        "and nothing else (rows with a variant: that one option changed). Baselines fit on "
        "train + val.",
        "",
    ]
    for name, rows in results.items():
        forest = next(r["macro_f1"] for r in rows if r["model"].startswith("random forest"))
        out += [
            f"### {name}",
            "",
            "| model | OA | macro F1 | kappa | >= forest (macro F1) | macro F1 before refit "
            "| epochs run (best) + refit | s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            cells = [f"{r[m]:.3f} ({r[m + '_min']:.3f}-{r[m + '_max']:.3f})" for m in METRICS]
            beats = "-" if r["baseline"] else ("yes" if r["macro_f1"] >= forest else "**no**")
            before = f"{r['selected_macro_f1']:.3f}" if "selected_macro_f1" in r else "-"
            out.append(
                f"| {r['model']} | {' | '.join(cells)} | {beats} | {before} | "
                f"{r.get('epochs', '-')} | {r['seconds']:.0f} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--seed-start", type=int, default=0, help="first seed (modis-ndvi: 3 = 2nd partition)"
    )
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--sets", default="temporalcnn,temporalcnn-ndvi,modis-ndvi")
    ap.add_argument("--variants", default="defaults", help=f"of {list(VARIANTS)}, comma-separated")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = isolated_workdir("bench-quality-")
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.sets.split(","):
        print(f"{name}:", flush=True)
        if name in FOLDED_SETS:
            uris = {seed: import_set(name, work, seed) for seed in seeds}
        else:
            uri = import_set(name, work)
            uris = dict.fromkeys(seeds, uri)
        rows = baselines(uris)
        for variant in args.variants.split(","):
            rows += networks(uris, args.families.split(","), variant)
        results[name] = rows
    info = (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads); load average "
        f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    print(markdown(results, info, len(seeds)))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "info": info}, indent=1))


if __name__ == "__main__":
    main()
