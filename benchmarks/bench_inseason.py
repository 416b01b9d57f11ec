"""In-season maps: accuracy against the date of the map, for both in-season strategies.

For each data set and family, one run trains, on the same training set and seed:

* **whole season**: the family at its defaults on whole seasons;
* **truncation**: the same with ``augment.truncation=0.5, truncation_min_steps=1`` (half the
  training series cut at a random step);
* **forecaster**: the season forecaster (:mod:`models.forecaster`, defaults) on the same
  training set, for the whole-season model's contract.

It then scores the test split with every series cut after ``k`` steps (the steps after the
cut marked missing, as an in-season cube leaves them), for each ``k``: the whole-season model
on the cut series (what a map made in season with no in-season strategy would be), the
truncation model, and the whole-season model on the series the forecaster completed
(strategy "forecast"). ``k = T`` is the whole season. The forecaster's reconstruction error
per band (test split, in the band's units) is reported beside persistence (the last observed
composite carried forward).

Data sets:

* ``demo``: the default demo region (:class:`DemoConfig`), monthly composites March-October
  (8 steps), 10 bands + NDVI, pixel training set with 16 px spatial blocks (as
  ``benchmarks/bench_demo_quality.py`` builds it); a cut after ``k`` months = a map as of the
  end of month ``k``;
* ``temporalcnn``: 260 + 260 real Formosat-2 series (149 dates, NIR/R/G, 13 classes) from
  ``../shared/fixtures/real/temporalcnn``; its table has no dates, so cuts are at fractions
  of the series.

Run: ``python -m benchmarks.bench_inseason [WORKDIR] [--sets demo temporalcnn]
[--families ltae tempcnn] [--seeds 3] [--demo-epochs 10] [--epochs N] [--out PATH]``;
writes ``benchmarks/inseason.png``, prints a markdown section for ``benchmarks/RESULTS.md``
(and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

HERE = Path(__file__).resolve().parent
STRATEGIES = ("whole-season model, cut series", "truncation", "forecast")


def demo_set(work: Path) -> str:
    """The default demo region's pixel training set (built as bench_demo_quality does)."""
    from benchmarks.bench_demo_quality import prepare

    prep = prepare(work, 16, 64, 16, ["pixel"])
    return str(prep["sets"]["pixel"].uri)


def temporalcnn_set(work: Path) -> str:
    from benchmarks.bench_quality import import_set

    return import_set("temporalcnn", work)


def cuts_for(n_time: int, name: str) -> list[int]:
    """Steps observed at each scored cut: every month (demo), else fractions of the series."""
    if n_time <= 12:
        return list(range(1, n_time + 1))
    return sorted({max(1, round(n_time * f)) for f in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)})


def train_one(uri: str, family: str, epochs: int | None, seed: int, truncation: float) -> Any:
    """Train one classifier (not registered); the loaded model."""
    from cropflow.train import TrainParams, load_model, train

    params = TrainParams.model_validate(
        {
            "training_set": uri,
            "model": {"name": family},
            "epochs": epochs,
            "seed": seed,
            "augment": {"truncation": truncation, "truncation_min_steps": 1},
            "register_model": False,
            "resume": False,
        }
    )
    result = train(params)
    if result.model_uri is None:
        raise RuntimeError(f"{family}: no model logged")
    return load_model(result.model_uri).model


def predict_cut(model: Any, data: Any, k: int, batch: int = 1024) -> npt.NDArray[np.int64]:
    """Class indices of the test split with every series cut after ``k`` steps."""
    from cropflow.train.data import Normaliser
    from cropflow.train.engine import date_kind_of, encode_dates
    from models.base import Batch

    split = data.split("test")
    contract = model.contract
    norm = Normaliser(contract.bands, contract.normalisation)
    out = []
    with torch.no_grad():
        for i in range(0, len(split.x), batch):
            x = norm(torch.from_numpy(np.ascontiguousarray(split.x[i : i + batch])))
            pad = torch.from_numpy(split.pad_mask[i : i + batch].copy())
            pad[:, k:] = True
            x = x.masked_fill(pad[:, :, None], 0.0)
            days = torch.from_numpy(split.dates[i : i + batch].copy())
            dates = encode_dates(days, pad, date_kind_of(model))
            logits = model(Batch(x=x, dates=dates, pad_mask=pad)).logits
            out.append(logits.argmax(dim=1).numpy())
    return np.concatenate(out)


def macro_f1(data: Any, pred: npt.NDArray[np.int64]) -> float:
    from cropflow.train.metrics import evaluate_labels

    split = data.split("test")
    return float(evaluate_labels(split.y, pred, data.class_map.names, "test").macro_f1)


def run_set(
    name: str, uri: str, families: list[str], epochs: int | None, seeds: list[int]
) -> dict[str, Any]:
    """Every strategy at every cut, for each family, mean over ``seeds`` (min and max kept)."""
    from cropflow.train.data import load_training_data
    from cropflow.train.forecast import score_forecaster, train_forecaster
    from cropflow.train.params import ForecastParams
    from models.forecaster import CompletedSeasonModel

    data = load_training_data(uri)
    n_time = int(data.n_time or 0)
    cuts = cuts_for(n_time, name)
    out: dict[str, Any] = {
        "set": name,
        "n_time": n_time,
        "bands": list(data.bands),
        "sizes": {k: len(v) for k, v in data.splits.items()},
        "cuts": cuts,
        "epochs": epochs,
        "seeds": seeds,
        "families": {},
    }
    forecasters: dict[int, Any] = {}
    for family in families:
        per_seed: list[list[dict[str, float]]] = []
        t0 = time.perf_counter()
        for seed in seeds:
            whole = train_one(uri, family, epochs, seed, 0.0).eval()
            trunc = train_one(uri, family, epochs, seed, 0.5).eval()
            if seed not in forecasters:  # one per data set and seed (it depends on the data)
                t1 = time.perf_counter()
                forecaster, report = train_forecaster(
                    data, whole.contract, ForecastParams(seed=seed, min_steps=1)
                )
                forecasters[seed] = forecaster
                if "forecaster" not in out:
                    test_report = score_forecaster(forecaster, data, "test")
                    out["forecaster"] = {
                        "seconds": time.perf_counter() - t1,
                        "best_epoch": report.best_epoch,
                        "epochs_run": report.epochs_run,
                        "test_by_band": [b.model_dump() for b in test_report.mean_by_band()],
                        "test_by_cut": [c.model_dump() for c in test_report.by_cut],
                    }
            completed = CompletedSeasonModel(whole, forecasters[seed]).eval()
            rows = []
            for k in cuts:
                rows.append(
                    {
                        STRATEGIES[0]: macro_f1(data, predict_cut(whole, data, k)),
                        STRATEGIES[1]: macro_f1(data, predict_cut(trunc, data, k)),
                        STRATEGIES[2]: macro_f1(data, predict_cut(completed, data, k)),
                    }
                )
                print(
                    f"  {name} {family} seed {seed} k={k}: "
                    + ", ".join(f"{s} {rows[-1][s]:.3f}" for s in STRATEGIES),
                    flush=True,
                )
            per_seed.append(rows)
        summary = []
        for i, k in enumerate(cuts):
            row: dict[str, Any] = {"k": k}
            for s in STRATEGIES:
                values = [runs[i][s] for runs in per_seed]
                row[s] = float(np.mean(values))
                row[s + ":min"], row[s + ":max"] = min(values), max(values)
            summary.append(row)
        out["families"][family] = {"rows": summary, "seconds": time.perf_counter() - t0}
    return out


def cut_label(result: dict[str, Any], k: int) -> str:
    if result["set"] == "demo":
        months = ["Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"]
        return f"end of {months[k - 1]}" if k <= len(months) else str(k)
    return f"{k}/{result['n_time']} ({k / result['n_time']:.0%})"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r, f) for r in results for f in r["families"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (r, family) in zip(axes[0], panels, strict=True):
        rows = r["families"][family]["rows"]
        x = [row["k"] / r["n_time"] for row in rows]
        for s, style in zip(STRATEGIES, ("k:", "C0o-", "C1s-"), strict=True):
            ax.plot(x, [row[s] for row in rows], style, label=s, ms=4)
        ax.set_title(f"{r['set']}: {family}")
        ax.set_xlabel("fraction of the season observed")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test macro-F1")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: list[dict[str, Any]], info: str) -> str:
    out = [
        "## In-season maps: accuracy against the date (`python -m benchmarks.bench_inseason`)",
        "",
        info,
        "",
        "Test-split macro-F1 with every series cut after k steps (later steps missing, as in "
        "an in-season cube). *whole-season model, cut series*: no in-season strategy; "
        "*truncation*: the family trained with `augment.truncation=0.5`; *forecast*: the "
        "whole-season model on series completed by the season forecaster. Plot: "
        "`benchmarks/inseason.png`.",
        "",
    ]
    for r in results:
        sizes = ", ".join(f"{k} {v}" for k, v in r["sizes"].items())
        epochs = r["epochs"] or "the family's default"
        out += [
            f"### {r['set']} ({r['n_time']} steps, {len(r['bands'])} bands; {sizes})",
            "",
            f"Epochs: {epochs}; mean over seeds {r['seeds']}"
            + (" (min-max)." if len(r["seeds"]) > 1 else "."),
            "",
        ]
        many = len(r["seeds"]) > 1
        for family, fam in r["families"].items():
            out += [
                f"**{family}** ({fam['seconds']:.0f} s for every seed's two classifiers)",
                "",
                "| observed | " + " | ".join(STRATEGIES) + " |",
                "|---|" + "---:|" * len(STRATEGIES),
            ]
            for row in fam["rows"]:
                best = max(row[s] for s in STRATEGIES)
                cells = []
                for s in STRATEGIES:
                    cell = f"**{row[s]:.3f}**" if row[s] == best else f"{row[s]:.3f}"
                    if many:
                        cell += f" ({row[s + ':min']:.2f}-{row[s + ':max']:.2f})"
                    cells.append(cell)
                out.append(f"| {cut_label(r, row['k'])} | " + " | ".join(cells) + " |")
            out.append("")
        fc = r.get("forecaster")
        if fc:
            out += [
                f"Season forecaster (seed {r['seeds'][0]}, {fc['seconds']:.0f} s, best epoch "
                f"{fc['best_epoch']} of "
                f"{fc['epochs_run']}): test RMSE of the forecast steps per band, pooled over "
                "every cut, in the band's units (persistence: the last observed composite "
                "carried forward):",
                "",
                "| band | forecaster RMSE | persistence RMSE | ratio |",
                "|---|---:|---:|---:|",
            ]
            for b in fc["test_by_band"]:
                ratio = b["rmse"] / b["persistence_rmse"] if b["persistence_rmse"] else float("nan")
                out.append(
                    f"| {b['band']} | {b['rmse']:.4g} | {b['persistence_rmse']:.4g} | {ratio:.2f} |"
                )
            out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", type=Path, default=None, help="default: a temp dir")
    ap.add_argument("--sets", nargs="+", default=["demo", "temporalcnn"])
    ap.add_argument("--families", nargs="+", default=["ltae", "tempcnn"])
    ap.add_argument(
        "--demo-epochs", type=int, default=10, help="demo classifiers (0: family default)"
    )
    ap.add_argument(
        "--epochs", type=int, default=0, help="other sets' classifiers (0: family default)"
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=HERE / "inseason.png")
    args = ap.parse_args()

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-inseason-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ["CROPFLOW_MLFLOW__TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    results = []
    for name in args.sets:
        uri = demo_set(work) if name == "demo" else temporalcnn_set(work)
        epochs = (args.demo_epochs if name == "demo" else args.epochs) or None
        results.append(run_set(name, uri, args.families, epochs, list(range(args.seeds))))
        (work / "inseason.json").write_text(json.dumps(results, indent=1))
    plot(results, args.png)
    info = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (load {load:.1f} at start), "
        f"torch {torch.__version__}, {args.threads} threads; "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    text = markdown(results, info)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
