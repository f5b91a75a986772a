"""Every MI estimator on the 40 "Beyond Normal" tasks: the diffusion estimator beside the classics.

Protocol, the same for every estimator and task: ``n = 12,000`` samples (seed 0). The trained
estimators (``diffusion``: :class:`~infodecomp.lightning.estimator.DiffusionMI`; ``infonce``,
``nwj``: MLP critics) train on 10,000 and report on the 2,000 held out, within 60 s on one CPU
thread each. ``ksg`` and ``gaussian`` use all 12,000. The baselines see standardised columns
(the suite's protocol); the diffusion estimator maps columns to Gaussian scores itself, so
``ksg-copula`` (KSG on the same Gaussian scores) is there to show what that preprocessing alone
is worth.

For the diffusion estimator the table also gives the standard estimator, the consistency gap,
the drift over training and the flag, and the summary says how well the flags separate the
tasks it gets wrong (error > 0.2 nats) from those it gets right (error <= 0.1 nats).

Prints a table and a summary, writes a plot of estimate against truth and, with ``--json
PATH``, ``{"rows": [...], "summary": {...}}`` after every task (``--resume`` skips the
``(task, estimator)`` pairs already in that file). ``--shard I/K`` takes every K-th task from
the I-th, so K processes can share the suite (merge their JSON files with ``--merge``, and
``--reflag`` recomputes the flags of merged rows from their recorded checks by the current rule).

``--diffusion-steps N`` trains the diffusion estimator for N steps instead of 2400: with few
steps most tasks are off by more than 0.2 nats, which is how the flags' catch rate is measured.

Usage:
    python benchmarks/baselines.py [--quick] [--tasks ID ...] [--estimators NAME ...] [--json PATH] [--resume]
                                   [--shard I/K] [--merge JSON ... [--reflag]] [--diffusion-steps N] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from infodecomp.estimators.baselines import (
    KSG,
    NWJ,
    GaussianMI,
    InfoNCE,
    NeuralConfig,
)
from infodecomp.evaluation import InfoRow, verdict
from infodecomp.lightning.estimator import DiffusionMI, knn_baseline
from infodecomp.tasks import get_task, task_ids

QUICK_TASKS = [
    "1v1-normal-0.75", "1v1-additive-0.1", "student-identity-2-2-1", "multinormal-dense-25-25-0.5",
    "half_cube-multinormal-sparse-5-5-2-2.0", "spiral-multinormal-sparse-5-5-2-2.0",
]
N_SAMPLES = 12_000
TRAIN_FRACTION = 5 / 6
SECONDS = 60.0
#: an error above this is "wrong" (the flags should catch it); at or below WITHIN, "right"
WRONG, WITHIN = 0.2, 0.1


def standardise(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(0)) / t.std(0).clamp_min(1e-12)


def estimators(quick: bool, diffusion_steps: int | None = None) -> dict[str, Callable[[torch.Tensor, torch.Tensor], dict]]:
    """``name -> run(x, y)``; each returns at least ``{"estimate": ...}``."""
    steps = diffusion_steps or (800 if quick else 2400)
    neural = NeuralConfig(steps=800 if quick else 3000, train_fraction=TRAIN_FRACTION, max_seconds=SECONDS)

    def diffusion(x: torch.Tensor, y: torch.Tensor) -> dict:
        est = DiffusionMI(max_steps=steps, max_seconds=SECONDS, train_fraction=TRAIN_FRACTION).fit(x, y)
        s = est.summary()
        return {"estimate": s.pop("orthogonal"), **{k: v for k, v in s.items() if k != "config"}}

    def plain(make: Callable[[], object]) -> Callable[[torch.Tensor, torch.Tensor], dict]:
        def run(x: torch.Tensor, y: torch.Tensor) -> dict:
            x, y = standardise(x), standardise(y)
            return {"estimate": make().fit(x, y).estimate()}
        return run

    return {
        "diffusion": diffusion,
        "ksg": plain(lambda: KSG(k=3)),
        "ksg-copula": lambda x, y: {"estimate": knn_baseline(x, y, x.shape[0])},  # the diffusion rows' cross-check
        "gaussian": plain(GaussianMI),
        "infonce": plain(lambda: InfoNCE(neural)),
        "nwj": plain(lambda: NWJ(neural)),
    }


def run(tasks: list[str], names: list[str], makers: dict[str, Callable], done: list[dict],
        save: Callable[[list[dict]], None]) -> list[dict]:
    rows = list(done)
    have = {(r["task"], r["estimator"]) for r in rows}
    todo = [(t, n) for t in tasks for n in names if (t, n) not in have]
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        job = bar.add_task("estimators x tasks", total=len(todo))
        for tid in dict.fromkeys(t for t, _ in todo):
            task = get_task(tid)
            x, y = task.sample(N_SAMPLES, seed=0, dtype=torch.float64)
            for name in (n for t, n in todo if t == tid):
                bar.update(job, description=f"{name} on {tid}")
                start = time.perf_counter()
                out = makers[name](x, y)
                rows.append({"task": tid, "estimator": name, "truth": task.mutual_information, **out,
                             "abs_error": abs(out["estimate"] - task.mutual_information),
                             "seconds": time.perf_counter() - start})
                bar.advance(job)
            save(rows)
    return rows


def reflag(rows: list[dict]) -> list[dict]:
    """The diffusion rows' flags recomputed from their recorded checks (estimate, SE, gap, drift, k-NN)
    by the current rule (:func:`infodecomp.evaluation.verdict`), e.g. after its tolerance changed."""
    out = []
    for r in rows:
        if r["estimator"] == "diffusion":
            row = InfoRow("mi/y", "y", "mi", r["estimate"], r["orthogonal_se"], 0, 0, gap=r["gap"],
                          gap_se=r["gap_se"], drift=r["drift"], baseline=r.get("baseline"))
            r = {**r, "flag": verdict(row)}
        out.append(r)
    return out


def summary(rows: list[dict]) -> dict:
    """Per estimator: mean |error| and tasks within 0.1 nats; for the diffusion estimator, how
    its flags split the tasks it gets wrong from the ones it gets right."""
    out: dict = {"estimators": {}}
    for name in dict.fromkeys(r["estimator"] for r in rows):
        errs = [r["abs_error"] for r in rows if r["estimator"] == name]
        out["estimators"][name] = {"tasks": len(errs), "mean_abs_error": sum(errs) / len(errs),
                                   "within_0.1": int(sum(e <= WITHIN for e in errs))}
    diff = [r for r in rows if r["estimator"] == "diffusion"]
    if diff:
        std = [abs(r["standard"] - r["truth"]) for r in diff]
        out["estimators"]["diffusion (standard)"] = {"tasks": len(std), "mean_abs_error": sum(std) / len(std),
                                                     "within_0.1": int(sum(e <= WITHIN for e in std))}
        wrong = [r for r in diff if r["abs_error"] > WRONG]
        off = [r for r in diff if r["abs_error"] > WITHIN]
        right = [r for r in diff if r["abs_error"] <= WITHIN]
        out["flags"] = {
            "wrong_tasks": len(wrong), "wrong_flagged": sum(r["flag"] != "ok" for r in wrong),
            "off_tasks": len(off), "off_flagged": sum(r["flag"] != "ok" for r in off),
            "right_tasks": len(right), "right_flagged": sum(r["flag"] != "ok" for r in right),
            "by_flag": {f: sum(r["flag"] == f for r in diff) for f in dict.fromkeys(r["flag"] for r in diff)},
        }
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 5))
    hi = max(r["truth"] for r in rows) * 1.4
    low = -0.5
    for name in dict.fromkeys(r["estimator"] for r in rows):
        pts = [(r["truth"], min(max(r["estimate"], low + 0.05), hi - 0.05)) for r in rows if r["estimator"] == name]
        ax.scatter(*zip(*pts, strict=True), label=name, alpha=0.7, s=40 if name == "diffusion" else 16,
                   marker="o" if name == "diffusion" else ".", zorder=3 if name == "diffusion" else 2)
    flagged = [(r["truth"], r["estimate"]) for r in rows if r["estimator"] == "diffusion" and r["flag"] != "ok"]
    if flagged:
        ax.scatter(*zip(*flagged, strict=True), s=110, facecolors="none", edgecolors="red", label="diffusion, flagged")
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="truth")
    ax.set_ylim(low, hi)
    ax.set_xlabel("true MI (nats)")
    ax.set_ylabel("estimate (nats, clipped to the axes)")
    ax.set_title(f"Beyond-Normal tasks, n = {N_SAMPLES}")
    ax.legend(fontsize=8)
    diff = [r for r in rows if r["estimator"] == "diffusion"]
    if diff:
        diff.sort(key=lambda r: r["abs_error"])
        colours = ["tab:green" if r["flag"] == "ok" else "tab:red" for r in diff]
        bx.barh(range(len(diff)), [r["abs_error"] for r in diff], color=colours)
        bx.set_yticks(range(len(diff)), [f"{r['task']} [{r['flag']}]" for r in diff], fontsize=6)
        for x, style in ((WITHIN, ":"), (WRONG, "--")):
            bx.axvline(x, color="grey", ls=style, lw=1)
        bx.set_xlabel("|error| of the diffusion estimator (nats); red: flagged")
        bx.set_title("Do the flags find the errors?")
    else:
        bx.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict], stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(dict.fromkeys(r["estimator"] for r in rows))
    table = Table(title=f"MI estimates (nats), n = {N_SAMPLES}")
    table.add_column("task")
    table.add_column("truth", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    extra = "diffusion" in names
    if extra:
        for col in ("standard", "gap ± SE", "drift", "flag"):
            table.add_column(col, justify="right")
    for tid in dict.fromkeys(r["task"] for r in rows):
        by = {r["estimator"]: r for r in rows if r["task"] == tid}
        cells = [f"{by[n]['estimate']:.3f}" if n in by else "" for n in names]
        if extra and "diffusion" in by:
            d = by["diffusion"]
            drift = "" if d["drift"] is None else f"{d['drift']:+.3f}"
            cells += [f"{d['standard']:.3f}", f"{d['gap']:+.3f} ± {d['gap_se']:.3f}", drift, d["flag"]]
        table.add_row(tid, f"{next(iter(by.values()))['truth']:.3f}", *cells)
    est = stats["estimators"]
    table.add_row("[bold]mean |error|[/bold]", "", *(f"{est[n]['mean_abs_error']:.3f}" for n in names))
    table.add_row("[bold]within 0.1[/bold]", "", *(f"{est[n]['within_0.1']}/{est[n]['tasks']}" for n in names))
    console = Console(width=200)
    console.print(table)
    if "diffusion (standard)" in est:
        s = est["diffusion (standard)"]
        console.print(f"diffusion, standard estimator: mean |error| {s['mean_abs_error']:.3f}, "
                      f"within 0.1 on {s['within_0.1']}/{s['tasks']}")
    if "flags" in stats:
        f = stats["flags"]
        console.print(f"flags: {f['wrong_flagged']}/{f['wrong_tasks']} tasks with error > {WRONG} flagged "
                      f"({f['off_flagged']}/{f['off_tasks']} with error > {WITHIN}); "
                      f"{f['right_flagged']}/{f['right_tasks']} tasks within {WITHIN} flagged; {f['by_flag']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_TASKS)} representative tasks, shorter training")
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all 40, or the quick six)")
    parser.add_argument("--estimators", nargs="+", default=None,
                        help="which of diffusion, ksg, ksg-copula, gaussian, infonce, nwj (default: all)")
    parser.add_argument("--shard", default="0/1", help="I/K: every K-th task from the I-th")
    parser.add_argument("--diffusion-steps", type=int, default=None,
                        help="training steps of the diffusion estimator (default 2400; fewer to test the flags on "
                             "under-trained models)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, the protocol)")
    parser.add_argument("--json", type=Path, default=None, help="rows and summary, rewritten after every task")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --json and skip them")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="combine these JSON files (no runs)")
    parser.add_argument("--reflag", action="store_true",
                        help="recompute the diffusion rows' flags from their recorded checks by the current rule")
    parser.add_argument("--plot", type=Path, default=Path("outputs/benchmarks/baselines.png"))
    args = parser.parse_args(argv)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    all_names = list(estimators(args.quick))
    names = args.estimators or all_names
    unknown = sorted(set(names) - set(all_names))
    tasks = args.tasks or (QUICK_TASKS if args.quick else task_ids("beyond_normal"))
    bad_tasks = sorted(set(tasks) - set(task_ids("beyond_normal")))
    try:
        index, shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= index < shards
    except (ValueError, AssertionError):
        parser.error(f"--shard must be I/K with 0 <= I < K, got {args.shard!r}")
    if unknown or bad_tasks:
        parser.error(f"unknown estimators {unknown} or tasks {bad_tasks}; estimators are {all_names}")
    if args.resume and args.json is None:
        parser.error("--resume needs --json")
    tasks = tasks[index::shards]
    torch.set_num_threads(args.threads)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}"
    start = time.perf_counter()

    def save(rows: list[dict]) -> None:
        if args.json is None:
            return
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.partial")
        tmp.write_text(json.dumps({"quick": args.quick, "machine": machine, "rows": rows,
                                   "summary": summary(rows)}, indent=1, default=float))
        os.replace(tmp, args.json)

    if args.merge:
        rows = [r for p in args.merge for r in json.loads(p.read_text())["rows"]]
        rows = reflag(rows) if args.reflag else rows
        save(rows)
    else:
        done = json.loads(args.json.read_text())["rows"] if args.resume and args.json.exists() else []
        rows = run(tasks, names, estimators(args.quick, args.diffusion_steps), done, save)
        save(rows)
    stats = summary(rows)
    print_table(rows, stats)
    plot(rows, args.plot)
    print(f"{time.perf_counter() - start:.0f} s on {machine}; plot: {args.plot}")
    return {"rows": rows, "summary": stats}


if __name__ == "__main__":
    main(sys.argv[1:])
