"""How fast the command line starts, and the fixed cost of a stage command.

Side by side in one run, each figure the median of ``--repeats`` fresh processes:

* **baseline**: ``python -c "import typer, pydantic"`` (what any typer/pydantic CLI pays);
* ``cropflow --help``, ``cropflow version`` and every stage command's ``--help``; the
  ratio to the baseline (goals, issue 14: ``--help`` and ``version`` under 1.5 s, a stage's
  ``--help`` under 2 s on this machine);
* with ``--stack``: the fixed cost of a stage command, ``cropflow search`` of a local
  catalog (13 real items), over the same search as a library call
  (``cropflow.stac.search.search_and_save``) in a warm process: once on a temporary local
  Prefect API (no stack), once with ``cropflow stack up`` running (its Prefect server is used,
  goal: under 3 s beyond the work).

Run: ``python -m benchmarks.bench_cli [--repeats N] [--stack]``; prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "cropflow")
STAGES = ("demo", "search", "cube", "training-set", "train", "predict", "run")
CATALOG = ROOT.parent / "shared" / "fixtures" / "stac" / "site2-2020_jun_jul-35MNM.geojson"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one fresh process (it must succeed)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    return seconds


def median_of(argv: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    return statistics.median(timed(argv, env) for _ in range(repeats))


def startup_rows(repeats: int) -> list[tuple[str, float]]:
    rows = [("baseline: python -c 'import typer, pydantic'", [sys.executable, "-c",
             "import typer, pydantic"])]  # fmt: skip
    rows += [("cropflow --help", [CLI, "--help"]), ("cropflow version", [CLI, "version"])]
    rows += [(f"cropflow {s} --help", [CLI, s, "--help"]) for s in STAGES]
    return [(name, median_of(argv, repeats)) for name, argv in rows]


def search_overhead(repeats: int, workdir: Path) -> tuple[float, float]:
    """(command seconds, library seconds) of the same local-catalog search."""
    env = {**os.environ, "CROPFLOW_WORKDIR": str(workdir)}
    argv = [CLI, "search", "--catalog", str(CATALOG), "--provider", "planetary-computer"]
    command = median_of(argv, repeats, env)
    code = (
        "import time, statistics\n"
        "from cropflow.stac.params import SearchParams\n"
        "from cropflow.stac.search import search_and_save\n"
        f"p = SearchParams(catalog={str(CATALOG)!r}, provider='planetary-computer')\n"
        "search_and_save(p)\n"
        "runs = []\n"
        f"for _ in range({repeats}):\n"
        "    t = time.perf_counter(); search_and_save(p); runs.append(time.perf_counter() - t)\n"
        "print(statistics.median(runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return command, float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stack", action="store_true", help="also measure on a running stack")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = startup_rows(args.repeats)
    base = rows[0][1]
    print("## Command-line start-up\n")
    print(f"`python -m benchmarks.bench_cli --repeats {args.repeats}"
          f"{' --stack' if args.stack else ''}`; {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the start; medians of "
          f"{args.repeats} fresh processes.\n")  # fmt: skip
    print("| command | seconds | over the baseline |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f}x |")
    if not args.stack:
        return
    from cropflow.orchestration import stack
    from cropflow.settings import get_settings

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp) / "work"
        os.environ["CROPFLOW_WORKDIR"] = str(work)
        alone, library = search_overhead(args.repeats, work)
        settings = get_settings()
        from cropflow.demo import DemoConfig, generate_demo

        generate_demo(settings.demo_dir, DemoConfig.tiny())  # the stack serves its catalog
        stack.up(settings)
        try:
            on_stack, library_stack = search_overhead(args.repeats, work)
        finally:
            stack.down(settings)
    print("\n| search of a local catalog (13 items) | command | library | fixed cost |")
    print("|---|---:|---:|---:|")
    print(f"| temporary Prefect API | {alone:.2f} s | {library:.2f} s | {alone - library:.2f} s |")
    print(
        f"| `cropflow stack up` running | {on_stack:.2f} s | {library_stack:.2f} s | "
        f"{on_stack - library_stack:.2f} s |"
    )


if __name__ == "__main__":
    main()
