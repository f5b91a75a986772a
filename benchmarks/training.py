"""Training benchmark: learned MI against ground truth, and Lightning's overhead.

1. Train ``DiffusionModule`` (MLP backbone) on ``1v1-normal-0.75`` and
   ``multinormal-dense-5-5-0.5`` for a fixed CPU time budget, then estimate the orthogonal MI
   from the EMA model on held-out pairs, next to the exact oracle's estimate on the same draws
   (so model error and Monte-Carlo error are told apart). Goal: within 0.05 nats of the truth.
2. Throughput of ``DiffusionModule`` under ``pl.Trainer`` against a plain PyTorch loop doing the
   same work (same loss function, AdamW, gradient clipping, EMA update) on the same backbone and
   batch, as a ratio measured in the same run. Goal: Lightning overhead at most 10%.

Usage:
    python benchmarks/training.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from infodecomp import mutual_information
from infodecomp.lightning import DiffusionModule, ShapesDataModule, VectorTaskDataModule
from infodecomp.models import LabelledUNet, MLPBackbone


def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_and_estimate(task: str, seconds: float) -> dict:
    dm = VectorTaskDataModule(task=task, n_train=50000, n_val=4000, batch_size=256)
    dim_x, dim_y = dm.task.dim_x, dm.task.dim_y
    module = DiffusionModule(MLPBackbone(dim_x, vector_conditions={"y": dim_y}, hidden=128, depth=3),
                             lr=2e-3, ema_decay=0.995, warmup_steps=100)
    trainer = pl.Trainer(max_time={"seconds": seconds}, max_steps=100_000, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         gradient_clip_val=1.0, accelerator="cpu")
    start = time.perf_counter()
    trainer.fit(module, dm)
    train_seconds = time.perf_counter() - start
    module.eval()
    x, y = dm.val_set.x, dm.val_set.cond["y"]
    model = mutual_information(module, x, {"y": y}, n_draws=64, seed=1)
    oracle = mutual_information(dm.ground_truth().oracle, x, {"y": y}, n_draws=64, seed=1)
    truth = dm.ground_truth().mutual_information["y"]
    return {
        "task": task, "truth": truth, "estimate": model.item(), "se": float(model.se),
        "oracle_estimate": oracle.item(), "oracle_se": float(oracle.se), "abs_error": abs(model.item() - truth),
        "steps": trainer.global_step, "train_seconds": train_seconds,
    }


def _plain_loop(module: DiffusionModule, loader: torch.utils.data.DataLoader, steps: int) -> float:
    """The same work as a Trainer step, without the Trainer: the same DataLoader, loss, backward,
    gradient clipping, AdamW and EMA update."""
    module.train()
    opt = torch.optim.AdamW(module.backbone.parameters(), lr=1e-4)
    start = None
    batches = iter(loader)
    for i in range(steps + 3):
        if i == 3:  # warm-up steps excluded
            start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        loss = module._loss(batch, train=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.backbone.parameters(), 1.0)
        opt.step()
        module.ema.update_parameters(module.backbone)
    return (time.perf_counter() - start) / steps


class StepTimer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of training (per-step cost without start-up)."""

    def __init__(self, warmup: int = 3) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.end = time.perf_counter()


def throughput(name: str, make_module, dm: pl.LightningDataModule, steps: int, repeats: int = 3) -> dict:
    """Median over ``repeats`` alternating runs of each (timings on a shared CPU are noisy)."""
    dm.setup("fit")
    plain, lightning = [], []
    for _ in range(repeats):
        torch.manual_seed(0)
        plain.append(_plain_loop(make_module(), dm.train_dataloader(), steps))
        torch.manual_seed(0)
        timer = StepTimer()
        trainer = pl.Trainer(max_steps=steps + 3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
                             accelerator="cpu", callbacks=[timer])
        trainer.fit(make_module(), dm)
        lightning.append((timer.end - timer.start) / steps)
    p, q = sorted(plain)[repeats // 2], sorted(lightning)[repeats // 2]
    return {"backbone": name, "batch_size": dm.batch_size, "steps": steps, "repeats": repeats,
            "seconds_per_step_plain": p, "seconds_per_step_lightning": q, "overhead": q / p - 1.0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 s of training per task, fewer timed steps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    _quiet()
    pl.seed_everything(0, verbose=False)
    budget = 30.0 if args.quick else 120.0
    accuracy = [train_and_estimate(t, budget) for t in ("1v1-normal-0.75", "multinormal-dense-5-5-0.5")]
    steps = 10 if args.quick else 30
    speed = [
        throughput("MLPBackbone (5-d, batch 256)",
                   lambda: DiffusionModule(MLPBackbone(5, vector_conditions={"y": 5}, hidden=128, depth=3)),
                   VectorTaskDataModule("multinormal-dense-5-5-0.5", n_train=4096, n_val=16, batch_size=256), steps * 5),
        throughput("LabelledUNet (3x16x16, batch 64)",
                   lambda: DiffusionModule(LabelledUNet(attributes={"shape": 3, "colour": 3, "position": 4})),
                   ShapesDataModule(n_train=1024, n_val=16, batch_size=64), steps),
    ]
    result = {"quick": args.quick, "accuracy": accuracy, "throughput": speed,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    t = Table(title=f"Learned MI after {budget:.0f} s of CPU training (nats)")
    for col in ("task", "truth", "model", "± SE", "oracle, same draws", "|error|", "steps"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for r in accuracy:
        t.add_row(r["task"], f"{r['truth']:.4f}", f"{r['estimate']:.4f}", f"{r['se']:.4f}",
                  f"{r['oracle_estimate']:.4f}", f"{r['abs_error']:.4f}", str(r["steps"]))
    console.print(t)
    s = Table(title="Lightning vs plain PyTorch, same backbone and batch")
    for col in ("backbone", "plain s/step", "Lightning s/step", "overhead"):
        s.add_column(col, justify="left" if col == "backbone" else "right")
    for r in speed:
        s.add_row(r["backbone"], f"{r['seconds_per_step_plain']:.4f}", f"{r['seconds_per_step_lightning']:.4f}",
                  f"{100 * r['overhead']:+.1f}%")
    console.print(s)
    console.print(f"[dim]{result['machine']}[/dim]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
