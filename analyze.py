"""Analyse a trained run: information, heatmaps, MMSE curves, likelihood and samples.

    python analyze.py report outputs/runs/shapes            # newest last.ckpt under the run directory
    python analyze.py report path/to/last.ckpt --out my_report --n-eval 1024 --n-draws 128
    python analyze.py report RUN --overwrite --wandb        # replace an existing report, log it to W&B

Writes report.json, PNG figures and report.md (default: <run>/report). Input problems (missing
checkpoint, a checkpoint of another model, a config that does not match) end with exit status 2
and one line on stderr; nothing in the output directory is changed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from infodecomp.report import AnalysisError, ReportSettings, make_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analyze.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="full report of a trained run")
    rep.add_argument("run", help="a checkpoint (.ckpt) or a run directory holding last.ckpt")
    rep.add_argument("--out", default=None, help="report directory (default: <run>/report)")
    rep.add_argument("--config", default=None, help="training config (default: the run's saved config.yaml)")
    rep.add_argument("--overwrite", action="store_true", help="replace an existing report")
    rep.add_argument("--n-eval", type=int, default=256, help="validation items evaluated")
    rep.add_argument("--n-draws", type=int, default=32, help="log-SNR draws per item")
    rep.add_argument("--n-heatmap", type=int, default=64, help="items whose per-pixel maps are computed")
    rep.add_argument("--no-samples", action="store_true", help="skip generating samples")
    rep.add_argument("--wandb", action="store_true", help="also log the report to W&B (offline without credentials)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.n_eval < 2 or args.n_draws < 4 or args.n_draws % 4:
        parser.error("--n-eval must be >= 2 and --n-draws a positive multiple of 4")
    settings = ReportSettings(n_eval=args.n_eval, n_draws=args.n_draws, n_heatmap=args.n_heatmap,
                              samples=not args.no_samples)
    try:
        out = make_report(args.run, args.out, config=args.config, overwrite=args.overwrite, settings=settings,
                          wandb=args.wandb)
    except AnalysisError as err:
        print(f"analyze.py: error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
