"""What every benchmark needs around its measurement: a workdir of its own (cropflow's files and
an MLflow SQLite store in it) and a line that says on what, under which load, it ran."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cropflow.train.training import TrainResult


def isolated_workdir(prefix: str, given: Path | None = None) -> Path:
    """``given`` (created when missing) or a new temporary folder, made cropflow's workdir and
    MLflow's store for this process (set before cropflow's settings are first read)."""
    work = (given or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ["CROPFLOW_MLFLOW__TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    return work


def machine_line(load_at_start: float, started: float, threads: int | None = None) -> str:
    """``Measured on <cpu>, <n> CPUs (torch <v>, <t> threads); load average <a> at start, <b>
    at end; <s> s in all`` (``started``: a :func:`time.perf_counter` reading)."""
    import torch

    n_threads = threads if threads is not None else torch.get_num_threads()
    return (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {n_threads} threads); load average {load_at_start:.1f} "
        f"at start, {os.getloadavg()[0]:.1f} at end; {time.perf_counter() - started:.0f} s in all"
    )


def family_arguments(
    description: str, seeds: int, families: str, sets: str = "temporalcnn,temporalcnn-ndvi"
) -> argparse.Namespace:
    """The command line of a benchmark that trains families on data sets for some seeds:
    ``--seeds --families --sets --threads --out`` (``--threads`` applied to torch)."""
    import torch

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--families", default=families)
    ap.add_argument("--sets", default=sets)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def train_family(
    uri: str, family: str, seed: int, model: dict[str, Any] | None = None, **options: Any
) -> TrainResult:
    """One training of ``family`` at its defaults (plus the ``model`` options of its config and
    the training ``options``) on the training set ``uri``, not registered."""
    from cropflow.train import TrainParams, train

    params = TrainParams.model_validate(
        {
            "training_set": uri,
            "model": {**(model or {}), "name": family},
            **options,
            "seed": seed,
            "register_model": False,
        }
    )
    return train(params)


def spread(values: list[float]) -> str:
    """``mean (min-max)`` of ``values``, three decimals."""
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def publish(info: str, body: str, out: Path | None) -> None:
    """Print a benchmark's section (its info line, a blank line, its tables) and write it to
    ``out`` when given."""
    text = info + "\n\n" + body
    print(text)
    if out:
        out.write_text(text)


def print_figures(figures: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Print a benchmark's figures one per line (name, value) and write them to ``out`` as
    JSON when given; returns them."""
    import json

    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:>{width}}: {v}")
    if out:
        out.write_text(json.dumps(figures, indent=2))
    return figures


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MiB; ``ru_maxrss`` would include the
    parent's size at fork."""
    with Path("/proc/self/status").open() as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    return int(hwm.split()[1]) / 1024


def in_fresh_process(code: str, argv: list[str], workdir: Path) -> dict[str, Any]:
    """Run Python ``code`` with ``argv`` in a fresh interpreter whose cropflow workdir is
    ``workdir``; the JSON object it prints last."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "CROPFLOW_WORKDIR": str(workdir)}
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
