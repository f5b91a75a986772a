"""Every MI estimator on the 40 "Beyond Normal" tasks (or CMI on the 14 conditional tasks):
the diffusion estimator beside the classics, at any sample size.

Protocol, the same for every estimator and task: ``--n`` samples (default 12,000) drawn with
``--seed`` (default 0, the seed the recipe was tuned on). The trained estimators
(``diffusion``: :class:`~infodecomp.lightning.estimator.DiffusionMI`; ``infonce``, ``nwj``: MLP
critics) train on 5/6 of them and report on the 1/6 held out, within ``--seconds`` (default 60)
on one CPU thread each. ``ksg`` and ``gaussian`` use all the samples. The baselines see
standardised columns (the suite's protocol); the diffusion estimator maps columns to Gaussian
scores itself, so ``ksg-copula`` (KSG on the same Gaussian scores) is there to show what that
preprocessing alone is worth. ``--conditional``: ``I(X; Y | C)`` on the 14 conditional-MI
tasks, the diffusion estimator (``fit(x, y, c=c)``) against Frenzel-Pompe (``frenzel-pompe``
on standardised columns, ``frenzel-pompe-copula`` on Gaussian scores).

**Distinct outcomes.** Gaussian scores undo any increasing map of each column, so tasks whose
scores are identical (``normal_cdf-``, ``half_cube-``, ``wiggly-``... of one base task) give the
estimators that see only those scores (``RANK_ONLY``) identical results. Such a group runs
once, its other tasks copy the result (``same_as``), and the summary reports the distinct
outcomes beside the 40-task figures.

For the diffusion estimator the table also gives the standard estimator, the consistency gap,
the drift over training, the midpoint's rise from the model kept to the last one trained ("after
best", once the held-out loss stopped improving), the step of the model kept and the flag, and the summary says how well
the flags separate the tasks it gets wrong (error > 0.2 nats) from those it gets right (error
<= 0.1 nats).

Prints a table and a summary, writes a plot of estimate against truth and, with ``--json
PATH``, ``{"rows": [...], "summary": {...}}`` after every task (``--resume`` skips the
``(task, estimator)`` pairs already in that file). ``--shard I/K`` takes every K-th group of
tasks from the I-th, so K processes can share the suite (merge their JSON files with
``--merge``, and ``--reflag`` recomputes the flags of merged rows from their recorded checks by
the current rule).

``--diffusion-steps N`` caps the diffusion estimator's training at N steps: with few steps most
tasks are off by more than 0.2 nats, which is how the flags' catch rate is measured.

Usage:
    python benchmarks/baselines.py [--quick] [--conditional] [--n N] [--seed S] [--seconds T] [--tasks ID ...]
                                   [--estimators NAME ...] [--json PATH] [--resume] [--shard I/K]
                                   [--merge JSON ... [--reflag]] [--diffusion-steps N] [--plot PATH]
"""

from __future__ import annotations

import argparse
import hashlib
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
    FrenzelPompe,
    GaussianCopula,
    GaussianMI,
    InfoNCE,
    NeuralConfig,
)
from infodecomp.evaluation import InfoRow, verdict
from infodecomp.lightning.estimator import DiffusionConfig, DiffusionMI, knn_baseline
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


def estimators(quick: bool, diffusion_steps: int | None = None, seconds: float = SECONDS,
               conditional: bool = False) -> dict[str, Callable[..., dict]]:
    """``name -> run(x, y[, c])``; each returns at least ``{"estimate": ...}``. With ``conditional``
    the estimators of ``I(X; Y | C)``: the diffusion estimator and Frenzel-Pompe."""
    steps = diffusion_steps or (800 if quick else None)
    neural = NeuralConfig(steps=800 if quick else 3000, train_fraction=TRAIN_FRACTION, max_seconds=seconds)

    def diffusion(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> dict:
        budget = {"max_seconds": seconds, "train_fraction": TRAIN_FRACTION}
        est = DiffusionMI(**budget, **({"max_steps": steps} if steps else {})).fit(x, y, c=c)
        s = est.summary()
        return {"estimate": s.pop("orthogonal"), **{k: v for k, v in s.items() if k != "config"}}

    def plain(make: Callable[[], object]) -> Callable[..., dict]:
        def run(*parts: torch.Tensor) -> dict:
            return {"estimate": make().fit(*(standardise(t) for t in parts)).estimate()}
        return run

    if conditional:
        return {
            "diffusion": diffusion,
            "frenzel-pompe": plain(lambda: FrenzelPompe(k=3)),
            "frenzel-pompe-copula": lambda x, y, c: {"estimate": knn_baseline(x, y, x.shape[0], c=c)},
        }
    return {
        "diffusion": diffusion,
        "ksg": plain(lambda: KSG(k=3)),
        "ksg-copula": lambda x, y: {"estimate": knn_baseline(x, y, x.shape[0])},  # the diffusion rows' cross-check
        "gaussian": plain(GaussianMI),
        "infonce": plain(lambda: InfoNCE(neural)),
        "nwj": plain(lambda: NWJ(neural)),
    }


#: estimators that see the data only through each column's Gaussian scores: tasks whose scores
#: are identical (an increasing map of each column, e.g. normal_cdf of a Gaussian task) give
#: identical results, so each group runs once and its other tasks copy the result
RANK_ONLY = ("diffusion", "ksg-copula", "frenzel-pompe-copula")


def preprocessing_groups(tasks: list[str], n: int, seed: int) -> dict[str, str]:
    """``task -> the first task whose samples have the same Gaussian scores`` (itself if none)."""
    first: dict[str, str] = {}
    out = {}
    for tid in tasks:
        parts = get_task(tid).sample(n, seed=seed, dtype=torch.float64)
        key = hashlib.sha1(b"".join(GaussianCopula().fit_transform(t).numpy().tobytes() for t in parts)).hexdigest()
        out[tid] = first.setdefault(key, tid)
    return out


def run(tasks: list[str], names: list[str], makers: dict[str, Callable], done: list[dict],
         save: Callable[[list[dict]], None], n: int = N_SAMPLES, seed: int = 0) -> list[dict]:
    rows = list(done)
    have = {(r["task"], r["estimator"]) for r in rows}
    todo = [(t, e) for t in tasks for e in names if (t, e) not in have]
    group = preprocessing_groups(tasks, n, seed)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        job = bar.add_task("estimators x tasks", total=len(todo))
        for tid in dict.fromkeys(t for t, _ in todo):
            task = get_task(tid)
            parts = task.sample(n, seed=seed, dtype=torch.float64)
            truth = task.conditional_mutual_information if len(parts) == 3 else task.mutual_information
            for name in (e for t, e in todo if t == tid):
                bar.update(job, description=f"{name} on {tid}")
                same = next((r for r in rows if r["task"] == group[tid] and r["estimator"] == name), None)
                if name in RANK_ONLY and group[tid] != tid and same is not None:
                    out = {**{k: v for k, v in same.items() if k not in ("task", "truth", "abs_error")},
                           "same_as": group[tid]}
                else:
                    start = time.perf_counter()
                    out = {**makers[name](*parts), "seconds": time.perf_counter() - start}
                rows.append({"task": tid, "estimator": name, "truth": truth, **out, "group": group[tid],
                             "abs_error": abs(out["estimate"] - truth), "n": n, "seed": seed})
                bar.advance(job)
            save(rows)
    return rows


def reflag(rows: list[dict]) -> list[dict]:
    """The diffusion rows' flags recomputed from their recorded checks (estimate, SE, gap, drift, k-NN,
    gain over the Gaussian base, the dependence's kurtosis z and the midpoint's rise after selection)
    by the current rule (:func:`infodecomp.evaluation.verdict`), e.g. after its tolerance changed."""
    out = []
    for r in rows:
        if r["estimator"] == "diffusion":
            # DiffusionMI reports no drift once the held-out loss has not improved for its patience
            # (rows from before "settled" was recorded: the default patience)
            patience = DiffusionConfig.patience * DiffusionConfig.val_every
            settled = r.get("settled", "best_step" in r and r["best_step"] <= r["steps"] - patience)
            row = InfoRow("mi/y", "y", "mi", r["estimate"], r["orthogonal_se"], 0, 0, gap=r["gap"], gap_se=r["gap_se"],
                          drift=None if settled else r["drift"], drift_se=None if settled else r.get("drift_se"),
                          baseline=r.get("baseline"), base_gain=r.get("base_gain"), dependence_z=r.get("dependence_z"),
                          late_drift=r.get("late_drift"), late_drift_se=r.get("late_drift_se"))
            r = {**r, "flag": verdict(row)}
        out.append(r)
    return out


def _accuracy(errs: list[float]) -> dict:
    return {"tasks": len(errs), "mean_abs_error": sum(errs) / len(errs), "within_0.1": int(sum(e <= WITHIN for e in errs))}


def _flags(diff: list[dict]) -> dict:
    wrong = [r for r in diff if r["abs_error"] > WRONG]
    off = [r for r in diff if r["abs_error"] > WITHIN]
    right = [r for r in diff if r["abs_error"] <= WITHIN]
    return {
        "wrong_tasks": len(wrong), "wrong_flagged": sum(r["flag"] != "ok" for r in wrong),
        "off_tasks": len(off), "off_flagged": sum(r["flag"] != "ok" for r in off),
        "right_tasks": len(right), "right_flagged": sum(r["flag"] != "ok" for r in right),
        "by_flag": {f: sum(r["flag"] == f for r in diff) for f in dict.fromkeys(r["flag"] for r in diff)},
    }


def summary(rows: list[dict]) -> dict:
    """Per estimator: mean |error| and tasks within 0.1 nats, over all tasks and over the distinct
    outcomes (one task per group of tasks with identical Gaussian scores); for the diffusion
    estimator, how its flags split the tasks it gets wrong from the ones it gets right."""
    out: dict = {"estimators": {}, "distinct": {}}
    distinct = [r for r in rows if r.get("group", r["task"]) == r["task"]]
    for name in dict.fromkeys(r["estimator"] for r in rows):
        out["estimators"][name] = _accuracy([r["abs_error"] for r in rows if r["estimator"] == name])
        out["distinct"][name] = _accuracy([r["abs_error"] for r in distinct if r["estimator"] == name])
    diff = [r for r in rows if r["estimator"] == "diffusion"]
    if diff:
        for key, part in (("estimators", diff), ("distinct", [r for r in diff if r in distinct])):
            out[key]["diffusion (standard)"] = _accuracy([abs(r["standard"] - r["truth"]) for r in part])
            if all("midpoint" in r for r in part):
                out[key]["diffusion (midpoint)"] = _accuracy([abs(r["midpoint"] - r["truth"]) for r in part])
        out["flags"] = _flags(diff)
        out["flags_distinct"] = _flags([r for r in diff if r in distinct])
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
    suite = "conditional-MI" if any("cmi-" in r["task"] for r in rows) else "Beyond-Normal"
    ax.set_title(f"{suite} tasks, {_size(rows)}")
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


def _size(rows: list[dict]) -> str:
    sizes = sorted({r.get("n", N_SAMPLES) for r in rows})
    seeds = sorted({r.get("seed", 0) for r in rows})
    return f"n = {', '.join(map(str, sizes))}, seed {', '.join(map(str, seeds))}"


def print_table(rows: list[dict], stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(dict.fromkeys(r["estimator"] for r in rows))
    table = Table(title=f"{'CMI' if any('cmi-' in r['task'] for r in rows) else 'MI'} estimates (nats), {_size(rows)}")
    table.add_column("task")
    table.add_column("truth", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    extra = "diffusion" in names
    if extra:
        for col in ("standard", "gap ± SE", "drift", "after best", "steps", "flag"):
            table.add_column(col, justify="right")
    for tid in dict.fromkeys(r["task"] for r in rows):
        by = {r["estimator"]: r for r in rows if r["task"] == tid}
        cells = [f"{by[n]['estimate']:.3f}" if n in by else "" for n in names]
        if extra and "diffusion" in by:
            d = by["diffusion"]
            drift = "" if d["drift"] is None else f"{d['drift']:+.3f}"
            late = "" if d.get("late_drift") is None else f"{d['late_drift']:+.3f}"
            steps = f"{d.get('best_step', d['steps'])}/{d['steps']}"
            cells += [f"{d['standard']:.3f}", f"{d['gap']:+.3f} ± {d['gap_se']:.3f}", drift, late, steps, d["flag"]]
        same = by[names[0]].get("same_as") if names[0] in by else None
        table.add_row(tid + (f" (= {same})" if same else ""), f"{next(iter(by.values()))['truth']:.3f}", *cells)
    for key, label in (("estimators", "all tasks"), ("distinct", "distinct outcomes")):
        est = stats[key]
        table.add_row(f"[bold]mean |error|, {label}[/bold]", "", *(f"{est[n]['mean_abs_error']:.3f}" for n in names))
        table.add_row(f"[bold]within 0.1, {label}[/bold]", "", *(f"{est[n]['within_0.1']}/{est[n]['tasks']}" for n in names))
    console = Console(width=220)
    console.print(table)
    for key in ("diffusion (standard)", "diffusion (midpoint)"):
        if key in stats["estimators"]:
            s, d = stats["estimators"][key], stats["distinct"][key]
            console.print(f"{key}: mean |error| {s['mean_abs_error']:.3f}, within 0.1 on {s['within_0.1']}/{s['tasks']} "
                          f"(distinct outcomes: {d['mean_abs_error']:.3f}, {d['within_0.1']}/{d['tasks']})")
    for key in ("flags", "flags_distinct"):
        if key in stats:
            f = stats[key]
            console.print(f"{key}: {f['wrong_flagged']}/{f['wrong_tasks']} tasks with error > {WRONG} flagged "
                          f"({f['off_flagged']}/{f['off_tasks']} with error > {WITHIN}); "
                          f"{f['right_flagged']}/{f['right_tasks']} tasks within {WITHIN} flagged; {f['by_flag']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_TASKS)} representative tasks, shorter training")
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all 40, or the quick six)")
    parser.add_argument("--conditional", action="store_true",
                        help="the 14 conditional-MI tasks, I(X; Y | C): diffusion against Frenzel-Pompe")
    parser.add_argument("--estimators", nargs="+", default=None,
                        help="which of diffusion, ksg, ksg-copula, gaussian, infonce, nwj (with --conditional: "
                             "diffusion, frenzel-pompe, frenzel-pompe-copula; default: all)")
    parser.add_argument("--n", type=int, default=N_SAMPLES, help=f"samples per task (default {N_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0, the one tuned on)")
    parser.add_argument("--seconds", type=float, default=SECONDS,
                        help=f"time budget of each trained estimator per task (default {SECONDS:.0f})")
    parser.add_argument("--shard", default="0/1",
                        help="I/K: every K-th group of tasks from the I-th (a group: tasks with identical Gaussian scores)")
    parser.add_argument("--diffusion-steps", type=int, default=None,
                        help="training steps of the diffusion estimator (default: DiffusionMI's; fewer to test the "
                             "flags on under-trained models)")
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
    kind = "conditional" if args.conditional else "beyond_normal"
    all_names = list(estimators(args.quick, conditional=args.conditional))
    names = args.estimators or all_names
    unknown = sorted(set(names) - set(all_names))
    tasks = args.tasks or (QUICK_TASKS if args.quick and not args.conditional else task_ids(kind))
    bad_tasks = sorted(set(tasks) - set(task_ids(kind)))
    try:
        index, shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= index < shards
    except (ValueError, AssertionError):
        parser.error(f"--shard must be I/K with 0 <= I < K, got {args.shard!r}")
    if unknown or bad_tasks:
        parser.error(f"unknown estimators {unknown} or tasks {bad_tasks}; estimators are {all_names}")
    if args.resume and args.json is None:
        parser.error("--resume needs --json")
    if args.n < 24:
        parser.error(f"--n must be at least 24 samples, got {args.n}")
    torch.set_num_threads(args.threads)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}"
    start = time.perf_counter()

    def save(rows: list[dict]) -> None:
        if args.json is None:
            return
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.partial")
        tmp.write_text(json.dumps({"quick": args.quick, "machine": machine, "n": args.n, "seed": args.seed,
                                   "seconds": args.seconds, "rows": rows, "summary": summary(rows)},
                                  indent=1, default=float))
        os.replace(tmp, args.json)

    if args.merge:
        rows = [r for p in args.merge for r in json.loads(p.read_text())["rows"]]
        rows = reflag(rows) if args.reflag else rows
        save(rows)
    else:
        if shards > 1:  # whole groups per shard, so each group's copies find their result
            group = preprocessing_groups(tasks, args.n, args.seed)
            mine = set(list(dict.fromkeys(group.values()))[index::shards])
            tasks = [t for t in tasks if group[t] in mine]
        done = json.loads(args.json.read_text())["rows"] if args.resume and args.json.exists() else []
        makers = estimators(args.quick, args.diffusion_steps, args.seconds, args.conditional)
        rows = run(tasks, names, makers, done, save, n=args.n, seed=args.seed)
        save(rows)
    stats = summary(rows)
    print_table(rows, stats)
    plot(rows, args.plot)
    print(f"{time.perf_counter() - start:.0f} s on {machine}; plot: {args.plot}")
    return {"rows": rows, "summary": stats}


if __name__ == "__main__":
    main(sys.argv[1:])
