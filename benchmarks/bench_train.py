"""Training benchmark: engine throughput per model family, and quality on real crop data.

Training
--------
* **throughput**: samples per second of cropflow's training loop (:func:`cropflow.train.
  engine.fit`: batching, normalisation, augmentation, forward, loss, backward, AdamW step)
  for every model family at its default hyper-parameters, on synthetic data of a stated size
  (pixel ``T x C``; patch and field ``T x C x S x S``). Only the training batches are timed
  (a progress hook marks them), not validation or checkpoints.
* **quality**: the real temporalCNN split (``../shared/fixtures/real/temporalcnn``: 260 + 260
  Formosat-2 pixel series, 149 dates x NIR, R, G, 13 classes) imported with
  :func:`cropflow.labels.build.import_sample_tables` (val carved from train by polygon), each
  pixel family trained with :func:`cropflow.train.train` (MLflow store in a temporary folder),
  next to random forests (scikit-learn, 500 trees) fit in the same run on the train split and
  on train + val; all scored on the given test split. Goal: beat the forest (the fixture's README
  quotes about 0.71 overall accuracy for a random forest).

Run: ``python -m benchmarks.bench_train [--quick] [--threads N] [--skip-quality]
[--skip-throughput]``; prints a markdown section and, with ``--json PATH``, the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TCNN = FIXTURES / "real" / "temporalcnn"
CROPS = ["wheat", "barley", "rapeseed", "corn", "soy", "sunflower", "sorghum", "pea"]

#: Synthetic input sizes of the throughput runs, per input kind (8 batches per epoch).
SIZES: dict[str, dict[str, int]] = {
    "pixel": {"n_time": 24, "batch": 256},
    "patch": {"n_time": 12, "batch": 4, "size": 32},
    "field": {"n_time": 12, "batch": 16, "size": 16},
}
STEPS_PER_EPOCH = 8
FAMILIES: dict[str, tuple[Literal["pixel", "patch", "field"], dict[str, Any]]] = {
    "crop_mask_lstm": ("pixel", {"name": "crop_mask_lstm", "local_positive_classes": ["c0"]}),
    "tempcnn": ("pixel", {"name": "tempcnn"}),
    "ltae": ("pixel", {"name": "ltae"}),
    "unet": ("patch", {"name": "unet"}),
    "utae": ("patch", {"name": "utae"}),
    "field_bigru": ("field", {"name": "field_bigru"}),
}
BANDS = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16",
         "swir22")  # fmt: skip


class _TrainClock:
    """A progress hook that times the training batches of each epoch (not validation)."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = self._last = 0.0

    def start_epoch(self, epoch: int, n_epochs: int, n_batches: int) -> None:
        self._start = self._last = time.perf_counter()

    def advance(self, loss: float) -> None:
        self._last = time.perf_counter()

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch_seconds.append(self._last - self._start)


def throughput(quick: bool) -> list[dict[str, Any]]:
    """Samples/s of the training loop per family: 1 warm-up epoch, then the median of the
    next epochs (2 in quick mode, 4 otherwise)."""
    from cropflow.train.checkpoint import CheckpointStore
    from cropflow.train.engine import fit
    from cropflow.train.params import TrainParams
    from cropflow.train.synthetic import synthetic_training_data
    from models.base import build_model

    rows = []
    epochs = 3 if quick else 5
    for family, (kind, cfg) in FAMILIES.items():
        size = SIZES[kind]
        n = STEPS_PER_EPOCH * size["batch"]
        data = synthetic_training_data(
            kind,
            sizes=(n, 8, 8),
            n_time=size["n_time"],
            bands=BANDS,
            classes=("c0", "c1", "c2", "c3", "c4"),
            size=size.get("size", 8),
        )
        params = TrainParams(
            training_set="memory://synthetic",
            model=cfg,
            epochs=epochs,
            batch_size=size["batch"],
            early_stopping={"patience": None},
        )
        torch.manual_seed(0)
        model = build_model(params.model, data.contract())
        clock = _TrainClock()
        with tempfile.TemporaryDirectory() as tmp:
            fit(model, data, params, CheckpointStore(Path(tmp), "bench"), progress=clock)
        seconds = float(np.median(clock.epoch_seconds[1:]))
        rows.append(
            {
                "family": family,
                "input": f"{kind} T={size['n_time']} C={len(BANDS)}"
                + (f" {size['size']}x{size['size']}" if "size" in size else ""),
                "batch": size["batch"],
                "parameters": model.n_parameters,
                "samples_per_s": n / seconds,
                "epoch_seconds": clock.epoch_seconds,
            }
        )
        print(f"  {family}: {rows[-1]['samples_per_s']:.1f} samples/s", flush=True)
    return rows


def quality(quick: bool, seed: int) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier

    from benchmarks.bench_quality import import_set
    from cropflow.train import TrainParams, train
    from cropflow.train.data import load_training_data
    from cropflow.train.metrics import evaluate_labels

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ["CROPFLOW_MLFLOW__TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    uri = import_set("temporalcnn", work, seed)
    data = load_training_data(uri)
    names = data.class_map.names
    te = data.splits["test"]
    results: dict[str, Any] = {
        "import_s": time.perf_counter() - t0,
        "n": {k: len(v) for k, v in data.splits.items()},
        "models": [],
    }

    for label, parts in (("train", ("train",)), ("train+val", ("train", "val"))):
        t0 = time.perf_counter()
        x = np.concatenate([data.splits[p].x for p in parts])
        y = np.concatenate([data.splits[p].y for p in parts])
        rf = RandomForestClassifier(n_estimators=500, n_jobs=1, random_state=seed)
        rf.fit(x.reshape(len(x), -1), y)
        ev = evaluate_labels(te.y, rf.predict(te.x.reshape(len(te), -1)), names, "test")
        results["models"].append(
            {"model": f"random forest, 500 trees ({label})",
             "seconds": time.perf_counter() - t0, **ev.summary()}
        )  # fmt: skip
        print(f"  random forest ({label}): OA {ev.overall_accuracy:.3f}", flush=True)

    epochs = 15 if quick else 40
    # crop-mask: alpha=1 so that its global (13-class) head, the one scored here, is not
    # down-weighted 10x against the crop/non-crop head; hidden 64 keeps the 149-step LSTM
    # within minutes on 2 cores
    configs: dict[str, dict[str, Any]] = {
        "tempcnn": {"name": "tempcnn"},
        "ltae": {"name": "ltae"},
        "crop_mask_lstm": {
            "name": "crop_mask_lstm",
            "local_positive_classes": CROPS,
            "alpha": 1.0,
            "hidden_size": 64,
        },
    }
    for family, cfg in configs.items():
        params = TrainParams(
            training_set=uri,
            model=cfg,
            epochs=epochs,
            batch_size=32,
            lr=1e-3,
            augment={"date_dropout": 0.1, "noise_std": 0.05},
            early_stopping={"patience": 10},
            seed=seed,
            register_model=False,
        )
        t0 = time.perf_counter()
        result = train(params)
        results["models"].append(
            {
                "model": family,
                "seconds": time.perf_counter() - t0,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                **result.test,
            }
        )
        print(
            f"  {family}: OA {result.test['overall_accuracy']:.3f} "
            f"({result.epochs_run} epochs, {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return results


def markdown(tp: list[dict[str, Any]] | None, q: dict[str, Any] | None, info: str) -> str:
    out = ["## Training", "", info, ""]
    if tp:
        out += [
            "Throughput of the training loop (default hyper-parameters of each family; "
            "training batches only):",
            "",
            "| family | input | batch | parameters | samples/s |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {r['family']} | {r['input']} | {r['batch']} | {r['parameters']:,} | "
            f"{r['samples_per_s']:.1f} |"
            for r in tp
        ]
        out.append("")
    if q:
        n = q["n"]
        out += [
            f"Quality on the real temporalCNN split (train {n['train']} / val {n['val']} / "
            f"test {n['test']} pixels, 13 classes), test split:",
            "",
            "| model | OA | macro F1 | kappa | mean IoU | epochs (best) | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in q["models"]:
            ep = f"{m['epochs_run']} ({m['best_epoch']})" if "epochs_run" in m else "-"
            out.append(
                f"| {m['model']} | {m['overall_accuracy']:.3f} | {m['macro_f1']:.3f} | "
                f"{m['kappa']:.3f} | {m['mean_iou']:.3f} | {ep} | {m['seconds']:.0f} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and epochs")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0]
    started = time.perf_counter()
    tp = None if args.skip_throughput else throughput(args.quick)
    q = None if args.skip_quality else quality(args.quick, args.seed)
    info = (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"{'quick' if args.quick else 'full'} run, seed {args.seed}; load average "
        f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared machine); "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    print(markdown(tp, q, info))
    if args.json:
        args.json.write_text(json.dumps({"throughput": tp, "quality": q, "info": info}, indent=1))


if __name__ == "__main__":
    main()
