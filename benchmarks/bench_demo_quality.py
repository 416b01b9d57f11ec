"""Demo-region quality benchmark: macro-F1 of each model family on the spatial hold-out.

One run does what ``cropflow demo`` does up to training, with the library calls the retrain
flow's tasks wrap (no Prefect): generate the default demo region (:class:`DemoConfig`, two
256 px tiles) under ``<workdir>/demo``, search it through the STAC API the search step
serves itself (provider ``local-demo``), write the monthly cube (the region's grid, the
:class:`CubeParams` defaults), build one training set per input kind with spatial block
splits, train each family (:func:`cropflow.train.train`, MLflow on SQLite in the workdir, no
registration) and score the test split. Goal (issue 5): macro-F1 0.85 or better for the best
family.

Pixel families (tempcnn, ltae, crop_mask_lstm) run by default; the patch (unet, utae) and
field (field_bigru) families are opt-in with ``--families`` (they cost more on 2 CPU cores).

Run: ``python -m benchmarks.bench_demo_quality [WORKDIR] [--families F ...] [--epochs N]
[--threads N] [--block-size PX] [--tile-size PX] [--out PATH]``; prints a markdown section
(and writes it to ``--out``). WORKDIR defaults to a new temporary folder; a finished region,
cube or training set found there is reused (their builds are idempotent), so report timings
from a fresh folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

Kind = Literal["pixel", "patch", "field"]

#: Families by name: their input kind and model config (defaults unless stated).
FAMILIES: dict[str, tuple[Kind, dict[str, Any]]] = {
    "tempcnn": ("pixel", {"name": "tempcnn"}),
    "ltae": ("pixel", {"name": "ltae"}),
    # alpha=1: its global (all-class) head, the one scored, is not down-weighted against the
    # crop/non-crop head; local_positive_classes are filled with the legend's crop classes
    "crop_mask_lstm": ("pixel", {"name": "crop_mask_lstm", "alpha": 1.0}),
    "unet": ("patch", {"name": "unet"}),
    "utae": ("patch", {"name": "utae"}),
    "field_bigru": ("field", {"name": "field_bigru"}),
}
DEFAULT_FAMILIES = ("tempcnn", "ltae", "crop_mask_lstm")
#: Batch size per input kind (a patch is 32 x 32 pixels, a field a padded crop of its pixels).
BATCH: dict[Kind, int] = {"pixel": 256, "patch": 8, "field": 16}
GOAL = 0.85


def prepare(
    work: Path,
    block_size_px: int,
    patch_block_size_px: int,
    patch_stride: int,
    kinds: list[Kind],
    tile_size: int | None = None,
) -> dict[str, Any]:
    """Region -> search -> cube -> one training set per kind; references, sizes and timings."""
    from cropflow.chain import cube_params_for, embedded_demo_region, labels_for, search_params_for
    from cropflow.cube import CubeParams, plan_from_search, write_cube
    from cropflow.demo import DemoConfig, generate_demo
    from cropflow.labels import TrainingSetOptions, TrainingSetParams, build_training_set
    from cropflow.settings import get_settings
    from cropflow.stac.search import search_and_save

    out: dict[str, Any] = {"seconds": {}, "sets": {}}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        out["seconds"][step] = now - clock
        clock = now

    config = DemoConfig() if tile_size is None else DemoConfig(tile_size=tile_size)
    generate_demo(get_settings().demo_dir, config)
    lap("region")
    region = embedded_demo_region()
    search = search_and_save(search_params_for(region))
    lap("search")
    plan = plan_from_search(search.uri, search.provider, cube_params_for(region, CubeParams()))
    cube = write_cube(plan)
    lap("cube")
    made = "DemoConfig()" if tile_size is None else f"DemoConfig(tile_size={tile_size})"
    out["region"] = f"{made} seed {config.seed}, 2 x {config.tile_size} px tiles"
    out["n_items"] = search.n_items
    out["cube"] = {
        "uri": cube.uri,
        "times": len(cube.times),
        "bands": [*cube.bands, *cube.indices],
        "shape": "{} x {} px".format(*cube.grid.shape),
        "mib": cube.size_bytes / 2**20,
    }
    labels = labels_for(region)
    for kind in kinds:
        options = TrainingSetOptions.model_validate(
            {
                "name": f"demo-{kind}",
                "samples": {"kind": kind, "patch_size": 32, "patch_stride": patch_stride},
                # 32 px patches need bigger blocks: a patch straddling two splits is dropped
                "splits": {
                    "block_size_px": patch_block_size_px if kind == "patch" else block_size_px
                },
            }
        )
        summary = build_training_set(TrainingSetParams.of(options, cube.uri, labels))
        out["sets"][kind] = summary
        lap(f"training set ({kind})")
    return out


def crop_classes(names: list[str]) -> list[str]:
    """The training set's classes the demo legend calls crops (crop_mask_lstm's positives)."""
    from cropflow.demo.legend import CLASSES

    crops = {c.name for c in CLASSES if c.kind == "crop"}
    return [n for n in names if n in crops]


def train_family(
    family: str, uri: str, classes: list[str], epochs: int, patience: int, seed: int, work: Path
) -> dict[str, Any]:
    """Train one family on a training set; its test scores, epochs and seconds."""
    from cropflow.train import TrainParams, train

    kind, cfg = FAMILIES[family]
    if family == "crop_mask_lstm":
        cfg = {**cfg, "local_positive_classes": crop_classes(classes)}
    params = TrainParams(
        training_set=uri,
        model=cfg,
        epochs=epochs,
        batch_size=BATCH[kind],
        early_stopping={"patience": patience},
        seed=seed,
        register_model=False,
        resume=False,
        checkpoint_dir=work / "checkpoints" / family,
        run_name=f"bench-demo-{family}",
    )
    t0 = time.perf_counter()
    result = train(params)
    return {
        "family": family,
        "kind": kind,
        "seconds": time.perf_counter() - t0,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "status": result.status,
        **result.test,
    }


def markdown(prep: dict[str, Any], rows: list[dict[str, Any]], info: str) -> str:
    cube = prep["cube"]
    out = [
        "## Quality on the demo region's spatial hold-out",
        "",
        info,
        "",
        f"Region {prep['region']}; {prep['n_items']} STAC items; monthly cube of "
        f"{cube['times']} steps x {len(cube['bands'])} variables ({', '.join(cube['bands'])}), "
        f"grid {cube['shape']} ({cube['mib']:.0f} MiB). Steps: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in prep["seconds"].items())
        + ".",
        "",
        "| training set | unit | train | val | test | classes (in test) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, s in prep["sets"].items():
        n = s.n_samples
        k = len(next(iter(s.class_counts.values()), {}))
        k_test = sum(1 for v in s.class_counts.get("test", {}).values() if v > 0)
        unit = "pixels" if kind == "pixel" else f"{kind}es" if kind == "patch" else f"{kind}s"
        out.append(
            f"| {kind} | {unit} | {n.get('train', 0):,} | {n.get('val', 0):,} | "
            f"{n.get('test', 0):,} | {k} ({k_test}) |"
        )
    out += [
        "",
        "Test split (spatial blocks never seen in training or early stopping):",
        "",
        "| family | input | macro F1 | OA | kappa | goal 0.85 | epochs (best) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['family']} | {r['kind']} | failed: {r['error']} | | | | | |")
            continue
        ok = "met" if r["macro_f1"] >= GOAL else "**missed**"
        out.append(
            f"| {r['family']} | {r['kind']} | {r['macro_f1']:.3f} | "
            f"{r['overall_accuracy']:.3f} | {r['kappa']:.3f} | {ok} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | {r['seconds']:.0f} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", type=Path, default=None, help="default: a temp dir")
    ap.add_argument(
        "--families",
        nargs="+",
        choices=list(FAMILIES),
        default=list(DEFAULT_FAMILIES),
        help=f"default: {' '.join(DEFAULT_FAMILIES)}",
    )
    ap.add_argument("--epochs", type=int, default=3, help="planned epochs (cosine schedule)")
    ap.add_argument("--patience", type=int, default=2, help="early-stopping patience")
    ap.add_argument("--block-size", type=int, default=16, help="split block side, px")
    ap.add_argument("--patch-block-size", type=int, default=64, help="same, patch sets")
    ap.add_argument("--patch-stride", type=int, default=16, help="patch stride, px (size 32)")
    ap.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="side of each demo tile, px (default: DemoConfig's 256); larger gives the patch "
        "families more hold-out patches",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = ap.parse_args()

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-demo-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # before any settings are read: the workdir (demo_dir = <workdir>/demo) and MLflow
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ["CROPFLOW_MLFLOW__TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    torch.set_num_threads(args.threads)

    load = os.getloadavg()[0]
    started = time.perf_counter()
    kinds = list(dict.fromkeys(FAMILIES[f][0] for f in args.families))
    prep = prepare(
        work, args.block_size, args.patch_block_size, args.patch_stride, kinds, args.tile_size
    )
    rows: list[dict[str, Any]] = []
    for family in args.families:
        kind = FAMILIES[family][0]
        ts = prep["sets"][kind]
        classes = list(next(iter(ts.class_counts.values()), {}))
        try:
            rows.append(
                train_family(family, ts.uri, classes, args.epochs, args.patience, args.seed, work)
            )
        except Exception as exc:  # report a failing family, keep measuring the others
            rows.append({"family": family, "kind": kind, "error": f"{type(exc).__name__}: {exc}"})
        r = rows[-1]
        print(
            f"  {family}: "
            + (f"macro F1 {r['macro_f1']:.3f} ({r['seconds']:.0f} s)" if "error" not in r
               else r["error"]),
            flush=True,
        )  # fmt: skip
    info = (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads), seed {args.seed}, "
        f"{args.epochs} planned epochs, patience {args.patience}, split blocks of "
        f"{args.block_size} px (patch sets: {args.patch_block_size} px, 32 px patches at "
        f"stride {args.patch_stride}); load average {load:.1f} at start, {os.getloadavg()[0]:.1f} "
        f"at end (shared machine); {time.perf_counter() - started:.0f} s in all; workdir {work}."
    )
    text = markdown(prep, rows, info)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
