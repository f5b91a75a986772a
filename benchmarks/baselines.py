"""Classical MI estimators on the "Beyond Normal" suite, at the suite's protocol (n = 5000).

Every baseline (KSG, Gaussian, InfoNCE, NWJ) on all 40 tasks; samples are standardised per
column first, as in the suite's protocol. Prints a table, writes a plot of estimate against
truth, and with ``--json PATH`` the rows ``{task, estimator, truth, estimate, abs_error, seconds}``.

Usage:
    python benchmarks/baselines.py [--quick] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from infodecomp.estimators.baselines import KSG, NWJ, GaussianMI, InfoNCE, NeuralConfig
from infodecomp.tasks import get_task, task_ids

QUICK_TASKS = [
    "1v1-normal-0.75", "1v1-additive-0.1", "student-identity-2-2-1", "multinormal-dense-25-25-0.5",
    "half_cube-multinormal-sparse-5-5-2-2.0", "spiral-multinormal-sparse-5-5-2-2.0",
]


def standardise(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(0)) / t.std(0).clamp_min(1e-12)


def run(quick: bool, n: int = 5000, seed: int = 0) -> list[dict]:
    tasks = QUICK_TASKS if quick else task_ids("beyond_normal")
    neural = NeuralConfig(steps=800 if quick else 3000)
    makers = {
        "ksg": lambda: KSG(k=3),
        "gaussian": lambda: GaussianMI(),
        "infonce": lambda: InfoNCE(neural),
        "nwj": lambda: NWJ(neural),
    }
    rows = []
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        job = bar.add_task("baselines", total=len(tasks) * len(makers))
        for tid in tasks:
            task = get_task(tid)
            x, y = task.sample(n, seed=seed, dtype=torch.float64)
            x, y = standardise(x), standardise(y)
            for name, make in makers.items():
                start = time.perf_counter()
                value = make().fit(x, y).estimate()
                rows.append({
                    "task": tid, "estimator": name, "truth": task.mutual_information, "estimate": value,
                    "abs_error": abs(value - task.mutual_information), "seconds": time.perf_counter() - start,
                })
                bar.advance(job)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    hi = max(r["truth"] for r in rows) * 1.4
    low = -0.5
    for name in dict.fromkeys(r["estimator"] for r in rows):
        pts = [(r["truth"], r["estimate"]) for r in rows if r["estimator"] == name]
        inside = [(t, e) for t, e in pts if low < e < hi]
        outside = [(t, low + 0.05 if e <= low else hi - 0.05) for t, e in pts if not low < e < hi]
        sc = ax.scatter(*zip(*inside, strict=True), label=name, alpha=0.7, s=18) if inside else None
        if outside:
            ax.scatter(*zip(*outside, strict=True), marker="v", s=30, alpha=0.7,
                       color=sc.get_facecolor()[0] if sc is not None else None)
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="truth")
    ax.set_ylim(low, hi)
    ax.text(0.02, 0.02, "▼ / ▲: estimate off the scale", transform=ax.transAxes, fontsize=8, color="grey")
    ax.set_xlabel("true MI (nats)")
    ax.set_ylabel("estimate (nats)")
    ax.set_title("Baselines on Beyond-Normal tasks (n = 5000)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(dict.fromkeys(r["estimator"] for r in rows))
    table = Table(title="MI estimates (nats), n = 5000")
    table.add_column("task")
    table.add_column("truth", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for tid in dict.fromkeys(r["task"] for r in rows):
        by = {r["estimator"]: r for r in rows if r["task"] == tid}
        table.add_row(tid, f"{by[names[0]]['truth']:.3f}", *(f"{by[n]['estimate']:.3f}" for n in names))
    mean_err = {n: sum(r["abs_error"] for r in rows if r["estimator"] == n) / sum(r["estimator"] == n for r in rows) for n in names}
    table.add_row("[bold]mean |error|[/bold]", "", *(f"{mean_err[n]:.3f}" for n in names))
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_TASKS)} representative tasks, shorter training")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=Path("outputs/benchmarks/baselines.png"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run(args.quick)
    print_table(rows)
    plot(rows, args.plot)
    seconds = time.perf_counter() - start
    print(f"{seconds:.0f} s on {platform.machine()}, {torch.get_num_threads()} threads; plot: {args.plot}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"quick": args.quick, "seconds": seconds, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
