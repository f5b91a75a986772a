"""How the cost of training and of the report grows with the work.

Every figure is measured in one run and given as a ratio against the first setting of its row,
with the exponent of the curve (the least-squares slope of log time against log size, e.g.
"report time ∝ pixels^1.0"):

* **image side** 16, 32, 64 (the demo's model, a ``LabelledUNet`` with three attributes, at
  that side): seconds per training step (batch 32, the demo's recipe: v-prediction, stable
  targets, EMA, AdamW, gradient clipping, through Lightning's Trainer) and per report item (the
  report's information step, all MI and CMI terms on shared draws);
* **conditioning variables** k = 1, 2, 4, 8 (16x16): the same two. The information step
  evaluates 2 + 2k conditions per draw, so its cost should grow about linearly in k;
* **validation items** n = 64, 128, 256, 512: the report's information step;
* **rows per denoiser forward** 64 to 4096 (16x16): the time per row, from which the engine's
  CPU forward size is chosen (``infodecomp.estimators.engine.forward_rows``);
* **processes**: 1 against 2 (DDP on the CPU, gloo, one thread each against one process with
  every core): training samples per second and the report's information step over the same
  items. Both run as subprocesses of this script (``--worker``), through ``Trainer.fit`` and
  ``analyze.py report``'s own code path (``make_report(..., devices=2)``).

Data are random tensors with random labels: the cost of a step does not depend on what is in
the images. Usage:

    python benchmarks/scaling.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from training import StepTimer  # noqa: E402

from infodecomp.evaluation import EvalBatch, information_estimates  # noqa: E402
from infodecomp.lightning import DiffusionModule  # noqa: E402
from infodecomp.lightning.data import DictDataset, _BaseDataModule  # noqa: E402
from infodecomp.models import LabelledUNet  # noqa: E402

# the demo's model and training recipe (configs/model/unet_labels.yaml), at any side and number of labels
RECIPE = {"cond_dropout": 0.5, "prediction": "v", "stable_target": 1024, "loss": "v_mse", "lr": 0.002,
          "warmup_steps": 10, "ema_decay": 0.995}
READOUT = 128  # the demo's mixture readout (templates)


def attributes(k: int) -> dict[str, int]:
    """``k`` label variables of 3 or 4 values (the demo's are shape 3, colour 3, position 4)."""
    demo = {"shape": 3, "colour": 3, "position": 4}
    return dict(list(demo.items())[:k]) if k <= 3 else {f"label{i}": 3 + i % 2 for i in range(k)}


def make_module(side: int, k: int, channels: tuple[int, ...]) -> DiffusionModule:
    backbone = LabelledUNet(image_size=side, channels=3, attributes=attributes(k), block_out_channels=list(channels),
                            layers_per_block=1, snr_gate=True, gate_fade=4.0, readout=READOUT)
    return DiffusionModule(backbone, **RECIPE)


class RandomLabelled(_BaseDataModule):
    """Random images with random labels: what a step costs, without generating a world."""

    def __init__(self, side: int, k: int, n: int = 2048, batch_size: int = 32) -> None:
        super().__init__(batch_size, 0, 0)
        gen = torch.Generator().manual_seed(0)
        self.input_shape = (3, side, side)
        x = torch.randn((n, 3, side, side), generator=gen)
        cond = {name: torch.randint(0, m, (n,), generator=gen) for name, m in attributes(k).items()}
        self.train_set = DictDataset(x, cond)
        self.val_set = DictDataset(x[:512], {c: v[:512] for c, v in cond.items()})

    def setup(self, stage: str) -> None:
        pass


def eval_batch(module: DiffusionModule, side: int, k: int, n: int) -> EvalBatch:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((n, 3, side, side), generator=gen)
    cond = {name: torch.randint(0, m, (n,), generator=gen) for name, m in attributes(k).items()}
    return EvalBatch(x=x, cond=cond, sample_ids=torch.arange(n))


def step_seconds(side: int, k: int, channels: tuple[int, ...], steps: int) -> float:
    """Mean wall time of a training step (after 3 warm-up steps), one process."""
    timer = StepTimer()
    trainer = pl.Trainer(max_steps=steps + 3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0, accelerator="cpu",
                         callbacks=[timer])
    trainer.fit(make_module(side, k, channels), RandomLabelled(side, k))
    return (timer.end - timer.start) / steps


def report_seconds_per_item(side: int, k: int, channels: tuple[int, ...], n: int, n_draws: int) -> float:
    """Wall time per item of the report's information step (every MI and CMI on shared draws)."""
    module = make_module(side, k, channels).eval()
    batch = eval_batch(module, side, k, n)
    start = time.perf_counter()
    information_estimates(module, batch, list(attributes(k)), n_draws=n_draws, estimators=("orthogonal", "standard"))
    return (time.perf_counter() - start) / n


def forward_seconds_per_row(rows: int, channels: tuple[int, ...], seconds: float = 1.0) -> float:
    """Wall time per row of one denoiser forward over ``rows`` rows (16x16, three labels): what
    :data:`~infodecomp.estimators.engine.CPU_FORWARD_ELEMENTS` is chosen from."""
    module = make_module(16, 3, channels).eval()
    batch = eval_batch(module, 16, 3, rows)
    logsnr = torch.zeros(rows)
    with torch.no_grad():
        module(batch.x, logsnr, batch.cond)
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            module(batch.x, logsnr, batch.cond)
            done += rows
    return (time.perf_counter() - start) / done


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    lx = [math.log(s) for s in sizes]
    ly = [math.log(t) for t in seconds]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def curve(name: str, unit: str, sizes: list[float], seconds: list[float], label: str) -> dict:
    return {"name": name, "unit": unit, "sizes": sizes, "seconds": seconds,
            "ratios": [t / seconds[0] for t in seconds], "exponent": exponent(sizes, seconds), "against": label}


# ---------------------------------------------------------------------------------------------
# 1 against 2 processes: subprocesses of this script


def worker(args: argparse.Namespace) -> None:
    """``--worker train|report``: one measurement, its result written (by rank zero) to ``--out``."""
    rank_zero = os.environ.get("LOCAL_RANK", "0") == "0"
    channels = tuple(int(c) for c in args.channels.split(","))
    if args.worker == "train":
        timer = StepTimer()
        strategy = "ddp" if args.devices > 1 else "auto"
        trainer = pl.Trainer(max_steps=args.steps + 3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             gradient_clip_val=1.0, accelerator="cpu", devices=args.devices, strategy=strategy,
                             callbacks=[timer])
        trainer.fit(make_module(16, 3, channels), RandomLabelled(16, 3))
        if rank_zero:
            per_step = (timer.end - timer.start) / args.steps
            Path(args.out).write_text(json.dumps({"seconds_per_step": per_step, "global_batch": 32 * args.devices,
                                                  "threads": torch.get_num_threads()}))
        return
    from infodecomp.analysis.report import ReportSettings, make_report

    settings = ReportSettings(n_eval=args.items, n_draws=args.draws, only=("information",), samples=False)
    out = make_report(args.run, Path(args.out).with_suffix(""), overwrite=True, settings=settings, progress=False,
                      accelerator="cpu", devices=args.devices)
    if out is not None:
        report = json.loads((out / "report.json").read_text())
        Path(args.out).write_text(json.dumps({"seconds": report["step_seconds"]["information"],
                                              "threads": torch.get_num_threads()}))


def _run_worker(tmp: Path, *extra: str) -> dict:
    out = tmp / f"w{len(list(tmp.iterdir()))}.json"
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", *extra, "--out", str(out)],
                   check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def processes(tmp: Path, channels: str, steps: int, items: int, draws: int) -> dict:
    """Training throughput and the report's information step, 1 against 2 processes."""
    train = {d: _run_worker(tmp, "train", "--devices", str(d), "--steps", str(steps), "--channels", channels)
             for d in (1, 2)}
    # a run directory for the report: the demo's model after a few steps, through train.py
    subprocess.run([sys.executable, str(HERE.parent / "train.py"), "--config", str(HERE.parent / "configs/debug.yaml"),
                    "--model.backbone.init_args.block_out_channels", f"[{channels}]",
                    "--data.init_args.n_train", "256", "--data.init_args.n_val", str(items)],
                   check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = next((tmp / "outputs").rglob("last.ckpt"))
    report = {d: _run_worker(tmp, "report", "--devices", str(d), "--run", str(ckpt), "--items", str(items),
                             "--draws", str(draws), "--channels", channels) for d in (1, 2)}
    samples = {d: train[d]["global_batch"] / train[d]["seconds_per_step"] for d in (1, 2)}
    return {"train": train, "report": report,
            "training_speedup": samples[2] / samples[1],
            "report_speedup": report[1]["seconds"] / report[2]["seconds"]}


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and items (about a minute on 2 cores)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--channels", default="16,32", help="UNet block_out_channels (default: the demo's)")
    parser.add_argument("--worker", choices=("train", "report"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--draws", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.worker:
        worker(args)
        return {}
    channels = tuple(int(c) for c in args.channels.split(","))
    steps, items, draws = (5, 16, 8) if args.quick else (20, 64, 16)
    start = time.perf_counter()
    curves = []
    sides = [16, 32] if args.quick else [16, 32, 64]
    pixels = [float(s * s) for s in sides]
    curves.append(curve("training step, image side", "s/step", pixels,
                        [step_seconds(s, 3, channels, steps) for s in sides], "pixels"))
    curves.append(curve("report, image side", "s/item", pixels,
                        [report_seconds_per_item(s, 3, channels, items // 4, draws) for s in sides], "pixels"))
    ks = [1, 2, 4] if args.quick else [1, 2, 4, 8]
    curves.append(curve("training step, conditioning variables", "s/step", [float(k) for k in ks],
                        [step_seconds(16, k, channels, steps) for k in ks], "variables"))
    curves.append(curve("report, conditioning variables", "s/item", [float(k) for k in ks],
                        [report_seconds_per_item(16, k, channels, items, draws) for k in ks], "variables"))
    ns = [32, 64, 128] if args.quick else [64, 128, 256, 512]
    curves.append(curve("report, validation items", "s", [float(n) for n in ns],
                        [report_seconds_per_item(16, 3, channels, n, draws) * n for n in ns], "items"))
    rows = [64, 256, 1024] if args.quick else [64, 256, 1024, 4096]
    curves.append(curve("denoiser forward, rows per call", "s/row", [float(r) for r in rows],
                        [forward_seconds_per_row(r, channels, 0.5 if args.quick else 2.0) for r in rows], "rows"))
    with tempfile.TemporaryDirectory() as tmp:
        procs = processes(Path(tmp), args.channels, steps * 2, items * 2, draws)
    result = {"quick": args.quick, "channels": list(channels), "curves": curves, "processes": procs,
              "seconds": time.perf_counter() - start,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    print_tables(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    t = Table(title=f"Cost against the work (UNet {result['channels']}; ratios to the first setting)")
    for col in ("curve", "settings", "time", "ratios", "exponent"):
        t.add_column(col, justify="left" if col in ("curve", "settings") else "right")
    for c in result["curves"]:
        sizes = ", ".join(f"{s:g}" for s in c["sizes"])
        t.add_row(c["name"], sizes, ", ".join(f"{s:.3g}" for s in c["seconds"]) + f" {c['unit']}",
                  ", ".join(f"{r:.2f}" for r in c["ratios"]), f"∝ {c['against']}^{c['exponent']:.2f}")
    console.print(t)
    p = result["processes"]
    console.print(
        f"DDP on the CPU, 2 processes against 1: training {p['training_speedup']:.2f}x samples/s "
        f"({p['train'][1]['seconds_per_step']:.3f} s/step at batch 32 against {p['train'][2]['seconds_per_step']:.3f} "
        f"s/step at 2 x 32); report {p['report_speedup']:.2f}x ({p['report'][1]['seconds']:.1f} s against "
        f"{p['report'][2]['seconds']:.1f} s)")
    console.print(f"[dim]{result['seconds']:.0f} s on {result['machine']}[/dim]")


if __name__ == "__main__":
    main(sys.argv[1:])
