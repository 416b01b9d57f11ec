"""The value of radar and terrain: S2 alone vs S2 + S1 vs S2 + S1 + DEM, spatial hold-out.

One run generates the demo region with Sentinel-1 RTC and a DEM (:class:`DemoConfig` with
``radar`` and ``terrain``; ``--weather cloudy``: the cloudy-year preset, 3 % clear and 85 %
overcast optical acquisitions), builds the region's cube of each source on the Sentinel-2
grid and stacks them (the library calls the retrain flow's tasks wrap), builds one pixel and
one patch training set on the stacked cube per input set (``bands``: the ten S2 bands and
ndvi; plus s1_vv, s1_vh; plus dem_elevation, dem_slope, dem_aspect) with the same spatial
block splits, trains each family at its defaults and scores the test split (blocks never
seen in training or early stopping).

Run: ``python -m benchmarks.bench_radar [--weather normal|cloudy] [--families F,...]
[--inputs s2,s2+s1,s2+s1+dem,s1,s1+dem] [--pixel-epochs N] [--patch-epochs N] [--size default|tiny]
[--workdir DIR] [--out PATH]``; prints a markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import isolated_workdir, machine_line, publish

#: Family -> sample kind.
FAMILIES = {"tempcnn": "pixel", "ltae": "pixel", "utae": "patch", "segformer": "patch"}
BATCH = {"pixel": 256, "patch": 8}
S1 = ["s1_vv", "s1_vh"]
DEM = ["dem_elevation", "dem_slope", "dem_aspect"]


def prepare(size: str, weather: str) -> dict[str, Any]:
    """Region -> searches -> the sources' cubes -> the stacked cube; references and timings."""
    from cropflow.chain import demo_config, embedded_demo_region
    from cropflow.cube.region import build_region_cube
    from cropflow.demo import generate_demo
    from cropflow.settings import get_settings

    t0 = time.perf_counter()
    config = demo_config(size, None, radar=True, weather=weather)
    manifest = generate_demo(get_settings().demo_dir, config)
    t_region = time.perf_counter() - t0
    region = embedded_demo_region(radar=True)
    built = build_region_cube(region)
    main, stacked = built.main, built.cube
    n_items = {"s2": built.searches[0].n_items}
    n_items |= {s.name: f.n_items for s, f in zip(region.sources, built.searches[1:], strict=True)}
    return {
        "region": region,
        "stacked": stacked,
        "optical": [*main.bands, *main.indices],
        "n_items": n_items,
        "clear": len({i.datetime for i in manifest.items if i.sky == "clear"}),
        "n_dates": len(manifest.dates),
        "seconds": {"region": t_region, "cubes": time.perf_counter() - t0 - t_region},
    }


def observed_share(uri: str) -> float:
    """Share of pixel-steps of the stacked cube with at least one valid optical observation."""
    from cropflow.cube import open_cube

    ds = open_cube(uri)
    return float((ds["valid_count"] > 0).mean())


def build_set(prep: dict[str, Any], kind: str, bands: list[str], name: str) -> Any:
    from cropflow.chain import labels_for
    from cropflow.labels import TrainingSetOptions, TrainingSetParams, build_training_set

    options = TrainingSetOptions.model_validate(
        {
            "name": name,
            "samples": {"kind": kind, "bands": bands, "patch_size": 32, "patch_stride": 16},
            "splits": {"block_size_px": 64 if kind == "patch" else 16},
        }
    )
    return build_training_set(
        TrainingSetParams.of(options, prep["stacked"].uri, labels_for(prep["region"]))
    )


def train_one(uri: str, family: str, epochs: int, seed: int) -> dict[str, Any]:
    from cropflow.train import TrainParams, train

    kind = FAMILIES[family]
    t0 = time.perf_counter()
    result = train(
        TrainParams.model_validate(
            {
                "training_set": uri,
                "model": {"name": family},
                "epochs": epochs,
                "batch_size": BATCH[kind],
                "seed": seed,
                "register_model": False,
                "resume": False,
            }
        )
    )
    return {"seconds": time.perf_counter() - t0, **result.test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weather", choices=["normal", "cloudy"], default="cloudy")
    ap.add_argument("--families", default="tempcnn,ltae,utae,segformer")
    ap.add_argument("--inputs", default="s2,s2+s1,s2+s1+dem")
    ap.add_argument("--pixel-epochs", type=int, default=5)
    ap.add_argument("--patch-epochs", type=int, default=10)
    ap.add_argument("--size", choices=["default", "tiny"], default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = isolated_workdir("bench-radar-", args.workdir)
    load, started = os.getloadavg()[0], time.perf_counter()

    prep = prepare(args.size, args.weather)
    families = args.families.split(",")
    inputs = args.inputs.split(",")
    optical = prep["optical"]
    inputs_bands = {
        "s2": optical,
        "s2+s1": optical + S1,
        "s2+s1+dem": optical + S1 + DEM,
        "s1": S1,  # radar alone: what it carries by itself
        "s1+dem": S1 + DEM,
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    cache = work / "radar-results.json"
    done: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else {}
    for inp in inputs:
        bands = inputs_bands[inp]
        for kind in dict.fromkeys(FAMILIES[f] for f in families):
            name = f"radar-{args.weather}-{kind}-{inp.replace('+', '-')}"
            ts = build_set(prep, kind, bands, name)
            for family in (f for f in families if FAMILIES[f] == kind):
                epochs = args.pixel_epochs if kind == "pixel" else args.patch_epochs
                key = f"{family}|{inp}|{epochs}|{args.seed}"
                if key not in done:  # a rerun in the same workdir keeps finished trainings
                    done[key] = train_one(ts.uri, family, epochs, args.seed)
                    cache.write_text(json.dumps(done, indent=1))
                rows[(family, inp)] = r = done[key]
                print(
                    f"  {family} {inp}: macro F1 {r['macro_f1']:.3f} ({r['seconds']:.0f} s)",
                    flush=True,
                )

    observed = observed_share(prep["stacked"].uri)
    lines = [
        "| family | " + " | ".join(inputs) + " | gain of S1 | gain of S1 + DEM |",
        "|---|" + "---:|" * (len(inputs) + 2),
    ]
    for family in families:
        f1 = {inp: rows[(family, inp)]["macro_f1"] for inp in inputs if (family, inp) in rows}
        cells = [f"{f1[i]:.3f}" if i in f1 else "" for i in inputs]
        gain1 = f"{f1['s2+s1'] - f1['s2']:+.3f}" if {"s2", "s2+s1"} <= f1.keys() else ""
        gain2 = f"{f1['s2+s1+dem'] - f1['s2']:+.3f}" if {"s2", "s2+s1+dem"} <= f1.keys() else ""
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {gain1} | {gain2} |")
    info = (
        f"### {args.weather} year ({args.size} demo, seed {args.seed})\n\n"
        + machine_line(load, started)
        + f". {prep['n_items']} STAC items; {prep['clear']} of {prep['n_dates']} optical dates "
        f"clear; {observed:.0%} of the cube's pixel-steps have a valid optical observation. "
        f"Pixel families {args.pixel_epochs} planned epochs, patch families "
        f"{args.patch_epochs} (32 px patches, stride 16); test-split macro F1:"
    )
    publish(info, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
