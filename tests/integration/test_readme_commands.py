"""Every command in the README's shell blocks runs, shrunk to debug size (the README is executable).

The commands are read from README.md when the tests are collected: every line of a ```bash (or
``sh``, ``shell``, untyped) fenced block that starts with ``python`` (or a console script,
``infodecomp-train`` / ``infodecomp-analyze``) becomes one test, so a command added to the
README is tested without editing this file. Backslash-continued lines are
joined and trailing ``# comments`` dropped. Optional parts written ``[--opt x]`` are *included*
(the bracketed options are run too; a ``--devices N`` above 2 is capped at 2, on the CPU).

Each command runs as a subprocess in its own temporary working directory, which holds a
``configs -> ROOT/configs`` link so that the README's relative ``configs/...`` and
``outputs/...`` paths work and every output lands in the temporary directory. Shrinking, by kind
(``shrink``):

* ``train.py``: ``--config configs/debug.yaml`` after the command's own ``--config`` options
  (its other overrides still win), small-data overrides of the experiment (``EXPERIMENTS``;
  data that is not shipped comes from ``tests.fixtures``), and a CSV logger under
  ``outputs/runs/<experiment>`` where the real run would write (unless the command names
  ``configs/debug.yaml`` itself). DDP commands run as written, on the CPU. A command that reads
  a run (``--ckpt_path outputs/runs/shapes/...`` or ``--ckpt_path last``) gets that run, trained
  once per module at debug size by the same rules and copied into its directory; a resume must
  continue that run (same ``version_0``, 3 more steps); one that starts from a run's weights
  (``--model.init_from outputs/runs/shapes/...``) gets it too and must be a new run that says so.
* ``analyze.py report RUN``: the run as above, and a small budget (``REPORT_BUDGET``).
* ``analyze.py pid RUN --variables ...``: the run as above, and a small budget.
* ``analyze.py heatmap|compositional|localize|intervene|pid``: a small budget and ``--out`` in the
  temporary directory; with ``--model`` the README's placeholders (``DIR``, ``IMG``, ...) become
  tiny fixtures through the one table ``PLACEHOLDERS``.
* ``python -m MODULE``: as written, for the modules in ``AS_WRITTEN``.

Anything else (another script, an unknown experiment, subcommand or placeholder) fails with a
message that names what the harness lacks; ``test_every_readme_command_has_a_shrink_rule``
checks that without running anything and is the only test here outside the ``slow`` marker.
``python`` blocks other than the quickstart (run by ``tests/unit/test_readme.py``) run too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Every test here is `slow` (run by `make test-all`) except the fast parse check; a module-level
# `pytestmark` cannot leave one test out, so the marker goes on each slow test.
slow = pytest.mark.slow

SHELL_LANGUAGES = {"", "bash", "sh", "shell"}
SCRIPTS = {"infodecomp-train": "train.py", "infodecomp-analyze": "analyze.py"}  # console scripts = these files
COMMAND_STARTS = ("python", "python3", *SCRIPTS)
PYTHON_LANGUAGES = {"python", "py"}
FENCE = re.compile(r"^[ \t]*```([\w+-]*)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
OPTIONAL = re.compile(r"(?<=\s)\[(--[^\[\]]*)\]")  # `[--words dog couch]` -> `--words dog couch`
PLACEHOLDER_LIKE = re.compile(r"^(?:[A-Z][A-Z0-9_-]*(?:\.[A-Za-z]+)?(?:/\w+)?|\.\.\.)$")  # DIR, COCO-IT.csv, ARO/vg
RUN_PATH = re.compile(r"^outputs/runs/(?P<name>[\w-]+)(?:/|$)")
TIMEOUT_S = 900
ENV = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


class NoShrinkRule(Exception):
    """The harness does not know how to run this README command at debug size."""


# --------------------------------------------------------------------------------------------
# Reading the README
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadmeCommand:
    line: int  # README line where the command starts
    argv: tuple[str, ...]  # as written, optional parts included, comment dropped
    unreadable: str | None = None  # why the line could not be split into arguments
    script: str | None = None  # the console script it was written with (argv then reads `python FILE`)

    @property
    def id(self) -> str:
        text = f"{self.script} {shlex.join(self.argv[2:])}" if self.script else shlex.join(self.argv[1:])
        return f"L{self.line}: {text if len(text) <= 90 else text[:87] + '...'}"


@dataclass(frozen=True)
class ReadmeSnippet:
    line: int
    code: str


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number of the body, body)`` of every fenced block."""
    return [(m.group(1).lower(), text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)]


def readme_commands(text: str | None = None) -> list[ReadmeCommand]:
    text = README.read_text() if text is None else text
    commands = []
    for language, first, body in fenced_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            start, logical = first + i, lines[i]
            while logical.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                logical = logical.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            if not any(logical.split(maxsplit=1)[:1] == [p] for p in COMMAND_STARTS):
                continue
            try:
                argv = tuple(shlex.split(OPTIONAL.sub(r"\1", logical), comments=True))
            except ValueError as err:  # e.g. an unclosed quote: the test of this command fails
                commands.append(ReadmeCommand(start, ("python", logical.strip()), f"cannot split it: {err}"))
                continue
            if argv[0] in SCRIPTS:  # `infodecomp-train ARGS` is `python train.py ARGS`, run as the script
                argv = ("python", SCRIPTS[argv[0]], *argv[1:])
                commands.append(ReadmeCommand(start, argv, script=logical.split()[0]))
            else:
                commands.append(ReadmeCommand(start, argv))
    return commands


def readme_python_snippets(text: str | None = None) -> list[ReadmeSnippet]:
    """``python`` blocks, less the quickstart (``tests/unit/test_readme.py`` runs and checks it)."""
    text = README.read_text() if text is None else text
    quickstart = text.find("## Quickstart")
    blocks = [(m.start(), text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)
              if m.group(1).lower() in PYTHON_LANGUAGES]
    after = [b for b in blocks if quickstart >= 0 and b[0] > quickstart]
    skip = after[0][0] if after else None
    return [ReadmeSnippet(line, textwrap.dedent(code)) for start, line, code in blocks if start != skip]


# --------------------------------------------------------------------------------------------
# Shrinking rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fx:
    """A tiny artifact built by ``Artifacts`` (the data the README's commands expect but the
    repository does not ship)."""

    name: str


SMALL_IMAGES = ["--data.init_args.n_train", "64", "--data.init_args.n_val", "16", "--data.init_args.batch_size", "8"]
SMALL_VECTORS = ["--data.init_args.n_train", "256", "--data.init_args.n_val", "64"]
# experiment (configs/experiment/<name>.yaml; "shapes" without one) -> small-data overrides
EXPERIMENTS: dict[str, list] = {
    "shapes": SMALL_IMAGES,
    "digits": SMALL_IMAGES,
    "shapes_text": SMALL_IMAGES,
    "pid": SMALL_IMAGES,
    "vector": SMALL_VECTORS,
    "finetune": [*SMALL_IMAGES, "--model.backbone.init_args.path", Fx("pretrained_unet")],
    "cifar10": ["--data.init_args.root", Fx("cifar10"), "--data.init_args.n_val", "10",
                "--data.init_args.batch_size", "4", "--model.backbone.init_args.block_out_channels", "[16, 32]",
                "--model.backbone.init_args.layers_per_block", "1", "--model.backbone.init_args.attention", "false"],
    "caption_folder": ["--data.init_args.root", Fx("caption_folder"), "--data.init_args.n_val", "4",
                       "--data.init_args.batch_size", "4"],
    "natural": ["--data.init_args.size", "16", "--model.backbone.init_args.image_size", "16",
                "--data.init_args.per_class", "2", "--data.init_args.truth_samples", "2000", *SMALL_IMAGES,
                "--model.backbone.init_args.block_out_channels", "[8, 16]",
                "--model.backbone.init_args.norm_num_groups", "4"],
}
RESUME_MAX_STEPS = "6"  # debug.yaml stops at 3: a resume from that checkpoint runs 3 more steps
REPORT_BUDGET = ["--n-eval", "8", "--n-draws", "4", "--n-heatmap", "4", "--no-samples"]
PROBE_BUDGET = {"heatmap": ["--n-items", "4", "--n-draws", "4"],
                "compositional": ["--n-items", "4", "--n-draws", "4"],
                "localize": ["--n-items", "4", "--n-draws", "4"],
                "intervene": ["--n-items", "4", "--n-draws", "4", "--steps", "4"],
                "pid": ["--n-items", "4", "--n-draws", "4"]}
MAX_DEVICES = 2
# (option, what the README writes) -> what runs; the only placeholders the harness knows.
PLACEHOLDERS: dict[tuple[str, str], str | Fx] = {
    ("--model", "DIR"): Fx("sd_pipeline"),
    ("--model", "sd21"): Fx("sd_pipeline"),
    ("--image", "IMG"): Fx("image"),
    ("--coco", "COCO"): Fx("coco"),
    ("--coco", "COCO_DIR"): Fx("coco"),
    ("--coco", "coco"): Fx("coco"),
    ("--csv", "COCO-IT.csv"): Fx("coco_it_csv"),
    ("--aro", "ARO/vg"): Fx("aro_vg"),
    ("--aro", "ARO/coco"): Fx("aro_coco"),
    ("--prompt", "..."): "a dog on a couch",  # the intervene example's caption; it holds --word dog
}
PATH_OPTIONS = {"--model", "--image", "--coco", "--csv", "--aro"}  # values must be placeholders
AS_WRITTEN = {"infodecomp.tasks"}  # `python -m` modules cheap enough to run unchanged


@dataclass
class Plan:
    """How a README command runs here: the subprocess's arguments (``Fx`` still to be built),
    the runs it reads (trained first, by ``run_producer``) and a check of what it left behind."""

    args: list
    runs: set[str] = field(default_factory=set)
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None


def option_value(args: list, option: str) -> str | None:
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]
    return values[-1] if values else None


def csv_logger(save_dir: str, name: str) -> str:
    return json.dumps([{"class_path": "pytorch_lightning.loggers.CSVLogger",
                        "init_args": {"save_dir": save_dir, "name": name}}])


def run_needed(path: str, what: str) -> str:
    match = RUN_PATH.match(path)
    if match is None:
        raise NoShrinkRule(f"{what} {path!r} is not a run under outputs/runs/<experiment>/, and the harness "
                           "has no other way to produce one")
    name = match.group("name")
    if name not in EXPERIMENTS:
        raise NoShrinkRule(f"{what} {path!r} needs a run of experiment {name!r}, which has no rule in EXPERIMENTS")
    return name


def check_placeholders(args: list) -> list:
    """Replace the README's placeholders through ``PLACEHOLDERS``; fail on any other."""
    out = list(args)
    for i, a in enumerate(out):
        prev = out[i - 1] if i else None
        if isinstance(a, str) and (prev, a) in PLACEHOLDERS:
            out[i] = PLACEHOLDERS[(prev, a)]
        elif prev in PATH_OPTIONS:
            raise NoShrinkRule(f"{prev} {a!r}: unknown placeholder; add it to PLACEHOLDERS")
        elif isinstance(a, str) and PLACEHOLDER_LIKE.match(a):
            raise NoShrinkRule(f"{a!r} (after {prev}) looks like a placeholder the harness does not know; "
                               "add it to PLACEHOLDERS")
    return out


def shrink(cmd: ReadmeCommand) -> Plan:
    """The debug-size form of a README command; ``NoShrinkRule`` when there is none."""
    if cmd.unreadable is not None:
        raise NoShrinkRule(cmd.unreadable)
    argv = list(cmd.argv[1:])
    if not argv:
        raise NoShrinkRule("a bare `python`")
    if argv[0] in ("train.py", "analyze.py"):
        prog = ([str(Path(sys.executable).parent / cmd.script)] if cmd.script
                else [sys.executable, str(ROOT / argv[0])])
        return (shrink_train if argv[0] == "train.py" else shrink_analyze)(prog, argv[1:])
    if argv[0] == "-m" and len(argv) > 1:
        if argv[1] not in AS_WRITTEN:
            raise NoShrinkRule(f"no shrink rule for `python -m {argv[1]}` (known: {sorted(AS_WRITTEN)})")
        return Plan([sys.executable, *check_placeholders(argv)])
    raise NoShrinkRule(f"no shrink rule for `python {argv[0]}`: the harness runs train.py, analyze.py and "
                       f"`python -m` {sorted(AS_WRITTEN)}")


def experiment_of(args: list[str]) -> str:
    names = [Path(args[i + 1]).stem for i, a in enumerate(args[:-1])
             if a == "--config" and Path(args[i + 1]).parent.name == "experiment"]
    name = names[-1] if names else "shapes"  # configs/default.yaml is the shapes experiment
    if name not in EXPERIMENTS:
        raise NoShrinkRule(f"train.py experiment {name!r} has no small-data rule in EXPERIMENTS")
    return name


def shrink_train(prog: list[str], args: list[str]) -> Plan:
    for a in args:
        if a.startswith("--") and "=" in a:
            raise NoShrinkRule(f"train.py option {a!r}: write `--key value` (the harness reads options by name)")
    args = check_placeholders(args)
    experiment = experiment_of(args)
    configs = [i + 1 for i, a in enumerate(args[:-1]) if a == "--config"]
    names_debug = any(args[i] == "configs/debug.yaml" for i in configs)
    at = configs[-1] + 1 if configs else 0
    debug = [] if configs and args[configs[-1]] == "configs/debug.yaml" else ["--config", "configs/debug.yaml"]
    out = [*args[:at], *debug, *args[at:], *EXPERIMENTS[experiment]]
    if not names_debug:  # write where the real run writes, so commands that read it find it
        out += ["--trainer.logger", csv_logger("outputs/runs", experiment)]
    devices = option_value(args, "--trainer.devices")
    if devices is not None and devices.isdigit() and int(devices) > 1:
        if int(devices) > MAX_DEVICES:
            out += ["--trainer.devices", str(MAX_DEVICES)]
        out += ["--trainer.accelerator", "cpu"]
    plan = Plan([*prog, *out], check=check_training_finished)
    ckpt = option_value(args, "--ckpt_path")
    if ckpt is not None:  # a resume: of the run it names, or with `last` of this experiment's newest
        name = experiment if ckpt == "last" else run_needed(ckpt, "--ckpt_path")
        plan.runs.add(name)
        plan.args += ["--trainer.max_steps", RESUME_MAX_STEPS]
        plan.check = check_resume_continues(f"outputs/runs/{name}")
    init = option_value(args, "--model.init_from")
    if init is not None:  # a new run from the weights of the run it names
        plan.runs.add(run_needed(init, "--model.init_from"))
        plan.check = check_started_from(init)
    return plan


def run_argument(rest: list, sub: str) -> str:
    """The run an ``analyze.py`` subcommand reads: its first positional argument."""
    positional = [a for i, a in enumerate(rest) if isinstance(a, str) and not a.startswith("-")
                  and (i == 0 or not str(rest[i - 1]).startswith("--") or rest[i - 1] == "--overwrite")]
    if not positional:
        raise NoShrinkRule(f"`analyze.py {sub}` without a run")
    return positional[0]


def shrink_analyze(prog: list[str], args: list[str]) -> Plan:
    if not args:
        raise NoShrinkRule("`analyze.py` without a subcommand")
    sub, rest = args[0], check_placeholders(args[1:])
    script = [*prog, sub]
    if sub == "report":
        return Plan([*script, *rest, *REPORT_BUDGET], runs={run_needed(run_argument(rest, sub), "report of")})
    if sub == "pid" and "--variables" in rest:  # a labelled run, through the report's loop
        return Plan([*script, *rest, *PROBE_BUDGET["pid"]], runs={run_needed(run_argument(rest, sub), "pid of")})
    if sub in PROBE_BUDGET:
        if any(isinstance(a, str) and a.startswith("outputs/runs/") for a in rest):
            raise NoShrinkRule(f"`analyze.py {sub}` of a trained run: no rule yet for producing a text run")
        extra = [*PROBE_BUDGET[sub], "--out", f"outputs/probes/{sub}"]
        devices = option_value(rest, "--devices")
        if devices is not None and devices.isdigit() and int(devices) > 1:
            extra += ["--devices", str(min(int(devices), MAX_DEVICES)), "--accelerator", "cpu"]
        return Plan([*script, *rest, *extra])
    raise NoShrinkRule(f"no shrink rule for `analyze.py {sub}` (known: report, {', '.join(PROBE_BUDGET)})")


def last_checkpoint(proc: subprocess.CompletedProcess, cwd: Path) -> Path:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("last checkpoint:")]
    assert lines, f"train.py did not print its last checkpoint; stdout tail:\n{proc.stdout[-2000:]}"
    return cwd / lines[-1].split(":", 1)[1].strip()


def check_training_finished(cwd: Path, proc: subprocess.CompletedProcess) -> None:
    assert last_checkpoint(proc, cwd).is_file(), "train.py printed a last checkpoint that is not there"


def check_started_from(source: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    """A run with ``--model.init_from`` is a new run that records where its weights came from."""

    def check(cwd: Path, proc: subprocess.CompletedProcess) -> None:
        import torch

        last = last_checkpoint(proc, cwd)
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        assert ckpt["hyper_parameters"]["init_from"] == source
        assert last.resolve() != (cwd / source).resolve(), "init_from wrote over the run it started from"

    return check


def check_resume_continues(run_dir: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    """A resume continues the one run copied in (``version_0``): same directory, more steps."""

    def check(cwd: Path, proc: subprocess.CompletedProcess) -> None:
        import torch

        last = last_checkpoint(proc, cwd)
        step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
        assert step == int(RESUME_MAX_STEPS), f"the resumed run stopped at step {step}, not {RESUME_MAX_STEPS}"
        versions = sorted(p.name for p in (cwd / run_dir).glob("version_*"))
        assert versions == ["version_0"], f"resuming left {versions} under {run_dir}, not the one run"
        expected = cwd / run_dir / "version_0" / "checkpoints" / "last.ckpt"
        assert last.resolve() == expected.resolve(), f"the resumed run wrote {last}, not {expected}"

    return check


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class Artifacts:
    """The tiny stand-ins for unshipped data, each built once per module when first needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> Path:
        from tests import fixtures

        if name == "sd_pipeline":
            return fixtures.write_tiny_sd_pipeline(self.root / "sd_pipeline")
        if name == "coco":
            return fixtures.write_tiny_coco(self.root / "coco")
        if name == "image":
            return self["coco"] / "val2017" / "000000001000.jpg"
        if name == "coco_it_csv":
            return self["coco"] / "COCO-IT.csv"
        if name == "aro":
            return fixtures.write_aro_sets(self.root / "aro")
        if name == "aro_vg":
            return self["aro"] / "vg"
        if name == "aro_coco":
            return self["aro"] / "coco"
        if name == "cifar10":
            return fixtures.write_tiny_cifar10(self.root / "cifar10")
        if name == "caption_folder":
            return fixtures.write_caption_folder(self.root / "caption_folder")
        if name == "pretrained_unet":
            return fixtures.write_tiny_pretrained_unet(self.root / "pretrained_unet")
        raise ValueError(f"no tiny artifact named {name!r}")

    def resolve(self, args: list) -> list[str]:
        return [str(self[a.name]) if isinstance(a, Fx) else a for a in args]


def workspace(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    return path


def execute(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    sys.stdout.write(f"[{time.perf_counter() - start:.1f} s] {shlex.join(args)}\n")
    return proc


def failure(what: str, proc: subprocess.CompletedProcess) -> str:
    return (f"{what}\nran as: {shlex.join(proc.args)}\nexited with {proc.returncode}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-4000:]}\n--- stdout (tail) ---\n{proc.stdout[-1000:]}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Artifacts:
    return Artifacts(tmp_path_factory.mktemp("readme_artifacts"))


@pytest.fixture(scope="module")
def run_producer(tmp_path_factory, artifacts: Artifacts) -> Callable[[str], Path]:
    """``produce(name)``: ``outputs/runs/<name>`` of the README's plain training command of that
    experiment, shrunk like every other, trained once per module."""
    home = workspace(tmp_path_factory.mktemp("readme_runs"))
    made: dict[str, Path] = {}

    def produce(name: str) -> Path:
        if name not in made:
            own = ["--config", f"configs/experiment/{name}.yaml"] if name != "shapes" else []
            plan = shrink(ReadmeCommand(0, ("python", "train.py", *own)))
            proc = execute(artifacts.resolve(plan.args), home)
            if proc.returncode != 0:
                pytest.fail(failure(f"training the {name} run that README commands read", proc), pytrace=False)
            made[name] = home / "outputs" / "runs" / name
        return made[name]

    return produce


COMMANDS = readme_commands()


def test_every_readme_command_has_a_shrink_rule() -> None:
    """Fast (outside ``slow``): each README command has a debug-size form, without running it."""
    assert any(c.argv[1] == "train.py" for c in COMMANDS), "no `python train.py` found in the README's blocks"
    assert any(c.argv[1] == "analyze.py" for c in COMMANDS), "no `python analyze.py` found in the README's blocks"
    missing = []
    for cmd in COMMANDS:
        try:
            shrink(cmd)
        except NoShrinkRule as err:
            missing.append(f"README line {cmd.line}: {shlex.join(cmd.argv)}\n    {err}")
    assert not missing, "README commands the harness cannot run at debug size:\n" + "\n".join(missing)


@slow
@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command_runs(cmd: ReadmeCommand, tmp_path: Path, artifacts: Artifacts,
                             run_producer: Callable[[str], Path]) -> None:
    try:
        plan = shrink(cmd)
    except NoShrinkRule as err:
        pytest.fail(f"README line {cmd.line}: {shlex.join(cmd.argv)}\nthe harness cannot shrink it: {err}")
    if cmd.script and not Path(plan.args[0]).is_file():
        pytest.fail(f"README line {cmd.line}: console script {cmd.script} is not installed in this environment "
                    f"({plan.args[0]}); reinstall the package (make install)")
    cwd = workspace(tmp_path / "work")
    for name in sorted(plan.runs):
        shutil.copytree(run_producer(name), cwd / "outputs" / "runs" / name)
    proc = execute(artifacts.resolve(plan.args), cwd)
    if proc.returncode != 0:
        pytest.fail(failure(f"README line {cmd.line}: {shlex.join(cmd.argv)}", proc), pytrace=False)
    if plan.check is not None:
        plan.check(cwd, proc)


SNIPPETS = readme_python_snippets()


@slow
def test_readme_python_blocks_run(tmp_path: Path) -> None:
    """Every ``python`` block other than the quickstart runs (there may be none)."""
    cwd = workspace(tmp_path / "work")
    for snippet in SNIPPETS:
        proc = execute([sys.executable, "-c", snippet.code], cwd)
        if proc.returncode != 0:
            pytest.fail(failure(f"the python block at README line {snippet.line}", proc), pytrace=False)
