"""``analyze.py`` (``infodecomp-analyze`` once installed): analyse a trained run: information, heatmaps, MMSE curves, likelihood and samples.

    python analyze.py report outputs/runs/shapes            # newest last.ckpt under the run directory
    python analyze.py report path/to/last.ckpt --out my_report --n-eval 1024 --n-draws 128
    python analyze.py report RUN --overwrite --wandb        # replace an existing report, log it to W&B

Text-to-image probes (default RUN: the model shipped in src/infodecomp/assets/shapes_text), each on held-out
captioned scenes, writing report.json, figures and summary.md (default: outputs/probes/<probe>):

    python analyze.py heatmap                  # CMI and MI map of every word of each caption
    python analyze.py compositional            # true caption vs attribute/relation swaps, shuffles
    python analyze.py compositional --aro DIR --aro-set vg-relation    # a local ARO set
    python analyze.py localize                 # word maps -> masks, mIoU vs attention baselines
    python analyze.py intervene --edit swap    # edit a word, regenerate, correlate the change

A local Stable-Diffusion-style pipeline (diffusers format) instead, with --model DIR:

    python analyze.py heatmap --model DIR --image IMG --prompt "a dog on a couch" [--words dog couch]
    python analyze.py compositional --model DIR --aro DIR --aro-set vg-attribution
    python analyze.py localize --model DIR --coco COCO_DIR --csv COCO-IT.csv [--devices 2]
    python analyze.py intervene --model DIR --image IMG --prompt "..." --word dog [--replacement cat]

Partial information decomposition (redundant, unique, synergistic information) of two conditions:

    python analyze.py pid RUN --variables y1 y2 [--given rest] [--measure mmi]   # a labelled run
    python analyze.py pid --words 1 2          # two words of each held-out caption (shipped model)
    python analyze.py pid --model DIR --image IMG --prompt "a red cube" --words red cube

Writes report.json, PNG figures and report.md (default: outputs/reports/<run name>, under the
working directory). Every output directory carries a .infodecomp-output marker; --overwrite
replaces only such a directory, never a file or a directory infodecomp did not write. --n-draws
is a positive multiple of 4. Input problems (missing checkpoint, a checkpoint of another model,
a config that does not match, an output that cannot be written) end with exit status 2 and one
line on stderr; nothing in the output directory is changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from infodecomp.analysis.common import AnalysisError, check_output, default_output

if TYPE_CHECKING:
    from infodecomp.analysis.probes import ProbeSettings

# the subcommands' names, known without importing torch (the probe module checks they agree)
PROBES = ("heatmap", "compositional", "localize", "intervene")
ARO_SETS = ("vg-relation", "vg-attribution", "coco-order", "flickr-order")


#: options that describe a pipeline's input, used only with --model DIR
PIPELINE_INPUTS = ("image", "prompt", "word", "replacement", "coco", "csv")
OVERWRITE_HELP = ("replace an existing report that infodecomp wrote (never a file or a directory it did not "
                  "write)")
DRAWS_HELP = ("log-SNR draws per item: a positive multiple of 4 (antithetic noise pairs, in pairs of strata "
              "for the standard error)")


def output_of(args: argparse.Namespace) -> Path | None:
    """Where the subcommand writes: ``--out``, else a default under the working directory
    (never beside the run, which may be the model inside the installed package)."""
    if args.out is not None:
        return Path(args.out)
    model = f"-{Path(args.model).name}" if getattr(args, "model", None) else ""
    if args.command == "report":
        return default_output("reports", args.run)
    if args.command == "pid" and args.variables is not None:
        return default_output("pid", args.run) if args.run is not None else None
    return Path("outputs") / "probes" / f"{args.command}{model}"


def precheck(args: argparse.Namespace) -> None:
    """Input checks that need no model: named files and directories exist, options that act only
    together are given together, the budgets are valid, and the output may be written
    (:func:`~infodecomp.analysis.common.check_output`). They run before torch is imported, so a
    typo is answered at once."""
    def exists(value: str | None, what: str, kind: str = "any") -> None:
        if value is None:
            return
        p = Path(value)
        ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
        if not ok:
            raise AnalysisError(f"{what} not found: {p}")

    exists(getattr(args, "run", None), "checkpoint or run directory")
    exists(getattr(args, "config", None), "config file", "file")
    exists(getattr(args, "model", None), "model directory", "dir")
    if not getattr(args, "model", None):
        given = [f"--{n}" for n in PIPELINE_INPUTS if getattr(args, n, None) is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise AnalysisError(f"{' and '.join(given)} only {verb} to a pipeline given with --model DIR; without "
                                f"--model, {args.command} analyses held-out scenes of RUN (default: the shipped model)")
    exists(getattr(args, "image", None), "image", "file")
    exists(getattr(args, "coco", None), "COCO root", "dir")
    exists(getattr(args, "csv", None), "CSV", "file")
    exists(getattr(args, "aro", None), "ARO root", "dir")
    if args.n_draws < 4 or args.n_draws % 4:
        raise AnalysisError(f"--n-draws must be a positive multiple of 4, got {args.n_draws}")
    n_items = ("--n-eval", args.n_eval) if args.command == "report" else ("--n-items", args.n_items)
    if n_items[1] < 2:
        raise AnalysisError(f"{n_items[0]} must be >= 2, got {n_items[1]}")
    if getattr(args, "target_se", None) is not None and not args.target_se > 0:
        raise AnalysisError(f"--target-se must be a positive number of nats, got {args.target_se}")
    if getattr(args, "devices", 1) < 1:
        raise AnalysisError(f"--devices must be >= 1, got {args.devices}")
    out = output_of(args)
    if out is not None:
        check_output(out, args.overwrite, resume=args.command == "localize" and bool(args.model))


PROBE_HELP = {
    "heatmap": "CMI and MI maps of each word of captioned scenes",
    "compositional": "true caption against perturbed ones (ARO-style)",
    "localize": "unsupervised localization of object words (mIoU)",
    "intervene": "edit a word, regenerate from the inverted latent, correlate the change with maps",
}


def run_pretrained(args: argparse.Namespace, settings: ProbeSettings):  # noqa: ANN201
    """The probes on a local Stable-Diffusion pipeline (``--model DIR``)."""
    from infodecomp.analysis import probes as pr

    def need(*names: str) -> None:
        missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n, None)]
        if missing:
            raise AnalysisError(f"{args.command} --model needs {' and '.join(missing)}")

    out = args.out
    if args.command == "heatmap":
        need("image", "prompt")
        return pr.heatmap(args.model, args.image, args.prompt, out, words=args.words, settings=settings,
                          overwrite=args.overwrite)
    if args.command == "compositional":
        need("aro")
        return pr.compositional(args.model, args.aro, args.aro_set, out, settings=settings, overwrite=args.overwrite)
    if args.command == "intervene":
        need("image", "prompt", "word")
        return pr.intervene(args.model, args.image, args.prompt, args.word, out, replacement=args.replacement,
                            settings=settings, overwrite=args.overwrite)
    need("coco", "csv")
    return pr.localize(args.model, args.coco, args.csv, out, settings=settings, overwrite=args.overwrite,
                       devices=args.devices, accelerator=args.accelerator)


def _word(w: str) -> str | int:
    """A word given on the command line: a position if it is an integer, else a name."""
    try:
        return int(w)
    except ValueError:
        return w


def run_pid(args: argparse.Namespace):  # noqa: ANN201
    """``analyze.py pid``: a labelled run (``--variables``) through the report's validation loop;
    two words (``--words``) of a text run's held-out scenes or of a pipeline's image."""
    if (args.variables is None) == (args.words is None):
        raise AnalysisError("pid needs either --variables V1 V2 (a labelled model) or --words W1 W2 (a text model)")
    if args.variables is not None:
        if args.model or args.run is None:
            raise AnalysisError("pid --variables needs the run of a labelled model (RUN), not --model")
        from infodecomp.analysis.report import ReportSettings, make_report

        given = args.given or ()
        given = "rest" if list(given) == ["rest"] else tuple(given)
        settings = ReportSettings(n_eval=args.n_items, n_draws=args.n_draws, seed=args.seed, samples=False,
                                  pid_variables=tuple(args.variables), pid_given=given, pid_measure=args.measure,
                                  only=("pid",))
        done = make_report(args.run, args.out, config=args.config, overwrite=args.overwrite, settings=settings,
                           wandb=args.wandb, accelerator=args.accelerator, devices=args.devices, name="pid")
        return None if done is None else f"{done}/report.md"
    given = args.given or ["rest"]
    if len(given) != 1 or given[0] not in ("rest", "none"):
        raise AnalysisError(f"for words, --given is 'rest' (the rest of the caption) or 'none', got {given}")
    from infodecomp.analysis import probes as pr

    settings = pr.ProbeSettings(n_items=args.n_items, n_draws=args.n_draws, seed=args.seed,
                                words=tuple(_word(w) for w in args.words), given=given[0], measure=args.measure)
    if args.model:
        missing = [f"--{n}" for n in ("image", "prompt") if not getattr(args, n)]
        if missing:
            raise AnalysisError(f"pid --model needs {' and '.join(missing)}")
        out = args.out
        return f"{pr.pid(args.model, args.image, args.prompt, out, settings=settings, overwrite=args.overwrite)}/summary.md"
    out = pr.run_probe("pid", args.run, args.out, config=args.config, overwrite=args.overwrite, settings=settings,
                       wandb=args.wandb)
    return f"{out}/summary.md"


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other input error (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def program_name(argv: list[str] | None, default: str = "analyze.py") -> str:
    """The program as the user called it (``infodecomp-analyze`` or ``analyze.py``) when it reads
    the command line; ``default`` when called from Python with an argument list."""
    if argv is None and sys.argv and sys.argv[0]:
        return Path(sys.argv[0]).name
    return default


def main(argv: list[str] | None = None) -> int:
    prog = program_name(argv)
    # allow_abbrev=False everywhere: a misspelt option (--n-ev) is an error, never taken for another
    parser = Parser(prog=prog, description=__doc__, allow_abbrev=False,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="full report of a trained run", allow_abbrev=False)
    rep.add_argument("run", help="a checkpoint (.ckpt) or a run directory holding last.ckpt")
    rep.add_argument("--out", default=None, help="report directory (default: outputs/reports/<run name> under the "
                     "working directory; a run's version_N directory is named <parent>-version_N)")
    rep.add_argument("--config", default=None, help="training config (default: the run's saved config.yaml)")
    rep.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    rep.add_argument("--n-eval", type=int, default=256, help="validation items evaluated")
    rep.add_argument("--n-draws", type=int, default=32, help=DRAWS_HELP)
    rep.add_argument("--n-heatmap", type=int, default=64, help="items whose per-pixel maps are computed")
    rep.add_argument("--target-se", type=float, default=None, metavar="NATS",
                     help="draw as often as it takes for every MI and CMI of the information table to reach this SE "
                     "over the --n-eval items (a pilot, 64 items estimated twice with 8 draws each, decides; at most 256 draws); heatmaps "
                     "and likelihood keep --n-draws")
    rep.add_argument("--no-samples", action="store_true", help="skip generating samples")
    rep.add_argument("--wandb", action="store_true", help="also log the report to W&B (offline without credentials)")
    rep.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (Lightning's; default: a GPU if there is one)")
    rep.add_argument("--devices", type=int, default=1, help="processes (DDP): the numbers do not change with it")
    for name in PROBES:
        p = sub.add_parser(name, help=PROBE_HELP[name], allow_abbrev=False)
        p.add_argument("run", nargs="?", default=None,
                       help="a text-to-image checkpoint or run directory (default: the shipped shapes_text model)")
        p.add_argument("--out", default=None, help=f"report directory (default: outputs/probes/{name}, with --model "
                       f"outputs/probes/{name}-<model directory name>, under the working directory)")
        p.add_argument("--config", default=None, help="training config (default: the run's config.yaml)")
        p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
        p.add_argument("--n-items", type=int, default=200, help="held-out scenes (or ARO items)")
        p.add_argument("--n-draws", type=int, default=32, help=DRAWS_HELP)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--wandb", action="store_true", help="also log the tables and figures to W&B")
        p.add_argument("--model", default=None, help="a local Stable-Diffusion-style pipeline directory")
        if name in ("heatmap", "intervene"):
            p.add_argument("--image", default=None, help="RGB image (with --model)")
            p.add_argument("--prompt", default=None, help="its caption (with --model)")
        if name == "heatmap":
            p.add_argument("--words", nargs="+", default=None,
                           help="words to map, each where its caption has it (default: all); without --model, "
                                "words of the held-out captions")
        if name == "intervene":
            p.add_argument("--word", default=None, help="the word to omit or replace (with --model)")
            p.add_argument("--replacement", default=None, help="replace the word instead of omitting it")
        if name == "localize":
            p.add_argument("--coco", default=None, help="COCO root: val2017/ and annotations/ (with --model)")
            p.add_argument("--csv", default=None, help="COCO-IT CSV (with --model)")
            p.add_argument("--devices", type=int, default=1, help="processes for Lightning's predict (DDP)")
            p.add_argument("--accelerator", default="auto")
        if name == "compositional":
            p.add_argument("--aro", default=None, help="root of a local ARO set (see infodecomp.probes.aro)")
            p.add_argument("--aro-set", default="vg-relation", choices=ARO_SETS)  # checked at parse time
        if name == "localize":
            p.add_argument("--calibration", type=float, default=0.25, help="share of images used to pick thresholds")
        if name == "intervene":
            p.add_argument("--edit", choices=("omit", "swap"), default="omit", help="omit a word or swap a colour")
            p.add_argument("--steps", type=int, default=50, help="DDIM steps of inversion and regeneration")
    p = sub.add_parser("pid", help="partial information decomposition of two conditions or two words",
                       allow_abbrev=False)
    p.add_argument("run", nargs="?", default=None,
                   help="a checkpoint or run directory (default: the shipped shapes_text model)")
    p.add_argument("--variables", nargs=2, default=None, metavar=("V1", "V2"),
                   help="two conditioning variables of a labelled model")
    p.add_argument("--words", nargs=2, default=None, metavar=("W1", "W2"),
                   help="two words of each caption of a text model: names or positions (negative from the end)")
    p.add_argument("--given", nargs="*", default=None,
                   help="held fixed: variables of a labelled model (or 'rest'); for words 'rest' (default) or "
                        "'none'")
    p.add_argument("--measure", choices=("pointwise-min", "mmi"), default="pointwise-min")
    p.add_argument("--out", default=None, help="report directory (default: outputs/pid/<run name> for variables, "
                   "outputs/probes/pid for words, under the working directory)")
    p.add_argument("--config", default=None, help="training config (default: the run's config.yaml)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--n-items", "--n-eval", dest="n_items", type=int, default=200, help="items evaluated")
    p.add_argument("--n-draws", type=int, default=32, help=DRAWS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wandb", action="store_true", help="also log the tables and figures to W&B")
    p.add_argument("--model", default=None, help="a local Stable-Diffusion-style pipeline directory")
    p.add_argument("--image", default=None, help="RGB image (with --model)")
    p.add_argument("--prompt", default=None, help="its caption (with --model)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (labelled runs)")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP, labelled runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = output_of(args)
    args.out = None if out is None else str(out)
    try:
        precheck(args)
    except AnalysisError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if args.command == "pid":
        try:
            out = run_pid(args)
        except AnalysisError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        if out is not None:
            print(f"pid report written to {out}")
        return 0
    if args.command in PROBES:
        from infodecomp.analysis.probes import ProbeSettings, run_probe

        settings = ProbeSettings(n_items=args.n_items, n_draws=args.n_draws, seed=args.seed,
                                 calibration=getattr(args, "calibration", 0.25), steps=getattr(args, "steps", 50),
                                 edit=getattr(args, "edit", "omit"),
                                 words=tuple(args.words or ()) if args.command == "heatmap" and not args.model else ())
        aro = (args.aro_set, args.aro) if getattr(args, "aro", None) else None
        try:
            if args.model:
                out = run_pretrained(args, settings)
                if out is None:  # a non-zero rank of a multi-process run
                    return 0
            else:
                out = run_probe(args.command, args.run, args.out, config=args.config, overwrite=args.overwrite,
                                settings=settings, wandb=args.wandb, aro=aro)
        except AnalysisError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        print(f"{args.command} report written to {out}/summary.md")
        return 0
    from infodecomp.analysis.report import ReportSettings, make_report

    settings = ReportSettings(n_eval=args.n_eval, n_draws=args.n_draws, n_heatmap=args.n_heatmap,
                              samples=not args.no_samples, target_se=args.target_se)
    try:
        out = make_report(args.run, args.out, config=args.config, overwrite=args.overwrite, settings=settings,
                          wandb=args.wandb, accelerator=args.accelerator, devices=args.devices)
    except AnalysisError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if out is not None:  # rank zero of a multi-device report
        print(f"report written to {out}/report.md")
        print(report_timing(out / "report.json"))
    return 0


def report_timing(path: Path) -> str:
    """The line ``analyze.py report`` ends with: the report's wall time, step by step (its report.json)."""
    import json

    from infodecomp.analysis.report import wall_time

    return f"report wall time: {wall_time(json.loads(Path(path).read_text()))}"
