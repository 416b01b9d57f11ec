"""TempCNN against a re-implementation of the reference forward pass, at identical sizes.

The reference is BreizhCrops' TempCNN (Russwurm et al. 2020, after Pelletier et al. 2019):
three blocks of ``Conv1d(kernel 5, padding 2) -> BatchNorm1d -> ReLU -> Dropout`` of 64
filters, flatten, ``Linear(64 * T, 4 * 64) -> BatchNorm1d -> ReLU -> Dropout``, ``Linear(4 * 64,
K)`` and a log-softmax; input ``[N, T, D]`` transposed to channels first. Its default sizes:
D = 13 bands, T = 45 dates, K = 9 classes, dropout 0.18. :class:`RefTempCNN` below is written
from that description (no code copied); cropflow's :class:`models.tempcnn.TempCNN` is built with
the same sizes (``conv_widths=[64, 64, 64]``, ``kernel_size=5``, ``hidden_size=256``).

Both get the same input (a dense batch: no padded dates), in eval mode under
``torch.inference_mode`` for inference, and one Adam step per batch for training; the table
gives samples per second (best of ``--repeats``, the two models alternating) and the ratio
cropflow / reference. cropflow's forward includes what a prediction pays for: the batch checks,
the padded-date fill and the :class:`models.base.ModelOutput` wrapper.

Run: ``python -m benchmarks.bench_tempcnn_ref [--threads 1 2] [--batches 256 4096]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from benchmarks.common import machine_line

D, T, K, WIDTH, KERNEL, DROPOUT = 13, 45, 9, 64, 5, 0.18


class RefTempCNN(nn.Module):
    """The reference architecture (see the module doc), for comparison only."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = D
        for _ in range(3):
            blocks += [
                nn.Conv1d(width, WIDTH, KERNEL, padding=KERNEL // 2),
                nn.BatchNorm1d(WIDTH),
                nn.ReLU(),
                nn.Dropout(DROPOUT),
            ]
            width = WIDTH
        self.conv = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.dense = nn.Sequential(
            nn.Linear(WIDTH * T, 4 * WIDTH),
            nn.BatchNorm1d(4 * WIDTH),
            nn.ReLU(),
            nn.Dropout(DROPOUT),
        )
        self.out = nn.Linear(4 * WIDTH, K)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.transpose(1, 2))
        h = self.dense(self.flatten(h))
        return torch.log_softmax(self.out(h), dim=-1)


def cropflow_tempcnn() -> nn.Module:
    """cropflow's TempCNN at the reference's sizes."""
    from cropflow.classes import ClassDef, ClassMap
    from models import build_model, parse_model_config
    from models.contract import BandStats, InputContract

    bands = [f"b{i:02d}" for i in range(D)]
    contract = InputContract(
        bands=bands,
        input_kind="pixel",
        time_kind="composite",
        n_time=T,
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in bands},
        class_map=ClassMap(classes=[ClassDef(id=k + 1, name=f"class{k}") for k in range(K)]),
    )
    config = parse_model_config(
        {
            "name": "tempcnn",
            "conv_widths": [WIDTH] * 3,
            "kernel_size": KERNEL,
            "hidden_size": 4 * WIDTH,
            "dropout": DROPOUT,
            "input_noise": 0.0,  # the reference has no input noise: the same computation
        }
    )
    return build_model(config, contract)


def _best(fn: Callable[[], None], repeats: int, samples: int) -> float:
    """Samples per second of ``fn`` (which handles ``samples``), best of ``repeats``."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return samples / best


def measure(batch: int, repeats: int, steps: int) -> dict[str, float]:
    """Inference and training samples/s of both models on ``steps`` batches of ``batch``."""
    from models.base import Batch

    torch.manual_seed(0)
    ref, ours = RefTempCNN(), cropflow_tempcnn()
    xs = [torch.randn(batch, T, D) for _ in range(steps)]
    ys = [torch.randint(0, K, (batch,)) for _ in range(steps)]
    batches = [Batch.dense(x) for x in xs]

    def infer_ref() -> None:
        with torch.inference_mode():
            for x in xs:
                ref(x)

    def infer_ours() -> None:
        with torch.inference_mode():
            for b in batches:
                ours(b)

    opt_ref = torch.optim.Adam(ref.parameters(), 1e-3)
    opt_ours = torch.optim.Adam(ours.parameters(), 1e-3)

    def train_ref() -> None:
        for x, y in zip(xs, ys, strict=True):
            opt_ref.zero_grad()
            nn.functional.nll_loss(ref(x), y).backward()
            opt_ref.step()

    def train_ours() -> None:
        for b, y in zip(batches, ys, strict=True):
            opt_ours.zero_grad()
            nn.functional.cross_entropy(ours(b).logits, y).backward()
            opt_ours.step()

    n = batch * steps
    out: dict[str, float] = {}
    ref.eval()
    ours.eval()
    for _ in range(2):  # alternate, so that a load change hits both
        for key, fn in (("infer_ref", infer_ref), ("infer_ours", infer_ours)):
            out[key] = max(out.get(key, 0.0), _best(fn, repeats, n))
    ref.train()
    ours.train()
    for _ in range(2):
        for key, fn in (("train_ref", train_ref), ("train_ours", train_ours)):
            out[key] = max(out.get(key, 0.0), _best(fn, max(1, repeats // 2), n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--samples", type=int, default=16384, help="samples per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load, started = os.getloadavg()[0], time.perf_counter()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            r = measure(batch, args.repeats, max(1, args.samples // batch))
            rows.append((threads, batch, r))
            print(threads, batch, {k: round(v) for k, v in r.items()}, flush=True)
    print(machine_line(load, started, None))
    print(f"\nD={D} bands, T={T} dates, K={K} classes, 3 x {WIDTH} filters, kernel {KERNEL}\n")
    print(
        "| threads | batch | inference ref | inference cropflow | ratio | training ref "
        "| training cropflow | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for threads, batch, r in rows:
        print(
            f"| {threads} | {batch} | {r['infer_ref']:,.0f} | {r['infer_ours']:,.0f} | "
            f"**{r['infer_ours'] / r['infer_ref']:.2f}** | {r['train_ref']:,.0f} | "
            f"{r['train_ours']:,.0f} | {r['train_ours'] / r['train_ref']:.2f} |"
        )


if __name__ == "__main__":
    main()
