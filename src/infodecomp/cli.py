"""``train.py``: LightningCLI over :class:`~infodecomp.lightning.DiffusionModule` (YAML under ``configs/``).

What this adds to LightningCLI:

* **Input errors in one line.** A missing config or checkpoint, a bad option, a data root that
  does not exist, ``batch_size 0``, a checkpoint of another model: ``train.py: error: ...`` on
  stderr and exit status 2 (the traceback with ``--verbose``). The cheap checks (files named on
  the command line) run before torch is imported, so they answer at once. Nothing is created
  by a run that fails its checks: data and model are checked before the trainer writes anything,
  and a run that fails inside ``fit`` before its first checkpoint removes the empty run
  directory it made.
* **Resume is a continuation.** ``--ckpt_path PATH`` (or ``--ckpt_path last``: the newest
  ``last.ckpt`` of this experiment, a fresh start when there is none) continues in the same run
  directory, CSV version and W&B run, with the same step, epoch, optimizer, scheduler, EMA,
  training draws and data order (see :class:`~infodecomp.lightning.DiffusionModule` and
  :class:`~infodecomp.lightning.data.EpochSampler`), so a run killed and resumed ends with the
  weights of an uninterrupted one. A run that already reached ``max_steps`` says so and exits 0.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The configs shipped with the package (``configs/`` in a checkout links here)."""


class UsageError(ValueError):
    """A problem with the user's input: reported as one line, exit status 2."""


def _option_values(argv: Sequence[str], names: Sequence[str]) -> list[tuple[str, str]]:
    """``(option, value)`` for every ``--opt value`` / ``--opt=value`` of ``names`` in ``argv``."""
    found = []
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key in names:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{key} needs a value")
                value = argv[i + 1]
            found.append((key, value))
    return found


def precheck(argv: Sequence[str]) -> None:
    """Checks that need no heavy import: every config file and checkpoint named exists."""
    for key, value in _option_values(argv, ("--config", "-c", "--ckpt_path")):
        if key == "--ckpt_path" and value in ("last", "null", "None"):
            continue
        if key != "--ckpt_path" and value.lstrip().startswith(("{", "[")):
            continue  # an inline YAML config
        if not Path(value).is_file():
            what = "checkpoint" if key == "--ckpt_path" else "config file"
            raise UsageError(f"{what} not found: {value}")


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if hasattr(obj, "get") else getattr(obj, key, default)


def _set(obj: Any, key: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj[key] = value
    else:
        setattr(obj, key, value)


def _logger_specs(trainer_cfg: Any) -> list[Any]:
    loggers = _get(trainer_cfg, "logger")
    if loggers is None or isinstance(loggers, bool):
        return []
    return list(loggers) if isinstance(loggers, list | tuple) else [loggers]


def _logger_dirs(spec: Any) -> tuple[str, Path] | None:
    """``(class name, save_dir/name)`` of a CSV or TensorBoard logger spec (versions live below)."""
    cls = str(_get(spec, "class_path", "")).rpartition(".")[2]
    args = _get(spec, "init_args") or {}
    if cls not in ("CSVLogger", "TensorBoardLogger"):
        return None
    default_name = "lightning_logs"
    return cls, Path(str(_get(args, "save_dir", "."))) / str(_get(args, "name", default_name) or "")


def find_last_checkpoint_of(trainer_cfg: Any) -> Path | None:
    """The newest ``version_*/checkpoints/last.ckpt`` under the configured file loggers."""
    found = []
    for spec in _logger_specs(trainer_cfg):
        dirs = _logger_dirs(spec)
        if dirs is not None:
            found += list(dirs[1].glob("version_*/checkpoints/last.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resume_loggers(trainer_cfg: Any, ckpt: dict, ckpt_path: Path) -> None:
    """Point the configured loggers at the checkpoint's run: same CSV/TensorBoard version, same
    W&B run id, so that a resumed run continues its directory, metrics file and W&B run."""
    saved = (ckpt.get("infodecomp_run") or {}).get("loggers") or []
    parent = ckpt_path.resolve().parent.parent  # .../<name>/version_N/checkpoints/last.ckpt
    for spec in _logger_specs(trainer_cfg):
        cls = str(_get(spec, "class_path", "")).rpartition(".")[2]
        args = _get(spec, "init_args")
        if args is None:
            continue
        if cls in ("CSVLogger", "TensorBoardLogger"):
            version = next((e["version"] for e in saved if e["class"] == cls), None)
            if version is None and parent.name.startswith("version_"):
                version = parent.name.removeprefix("version_")
            if version is not None:
                _set(args, "version", int(version) if str(version).isdigit() else version)
        elif cls in ("WandbLogger", "AutoWandbLogger"):
            run_id = next((e["version"] for e in saved if e["class"] in ("WandbLogger", "AutoWandbLogger")), None)
            if run_id:
                _set(args, "id", run_id)


def _make_cli_class() -> type:
    from pytorch_lightning.cli import LightningCLI

    class TrainCLI(LightningCLI):
        """``python train.py [--config FILE ...] [--ckpt_path last.ckpt | last] [--section.key value ...]``."""

        checkpoint: dict | None = None

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="resume from this checkpoint (a run's last.ckpt), or 'last': the newest "
                                     "last.ckpt of this experiment's run directory, if any")

        def before_instantiate_classes(self) -> None:
            from infodecomp.lightning.module import read_checkpoint

            cfg = self.config
            trainer_cfg = cfg.trainer
            max_steps = _get(trainer_cfg, "max_steps")
            if max_steps is not None and max_steps < -1:
                raise UsageError(f"trainer.max_steps must be -1 (no limit) or >= 0, got {max_steps}")
            ckpt_path = cfg.ckpt_path
            if ckpt_path == "last":
                found = find_last_checkpoint_of(trainer_cfg)
                if found is None:
                    log.warning("no last.ckpt of this experiment yet: starting a new run")
                cfg.ckpt_path = ckpt_path = str(found) if found else None
            if ckpt_path is not None:
                try:
                    self.checkpoint = read_checkpoint(ckpt_path)
                except ValueError as err:
                    raise UsageError(str(err)) from err
                resume_loggers(trainer_cfg, self.checkpoint, Path(ckpt_path))

    return TrainCLI


def _check_before_fit(cli: Any) -> None:
    """Everything that can be checked before the trainer writes anything."""
    dm, model = cli.datamodule, cli.model
    check = getattr(dm, "check", None)
    if callable(check):
        check()
    dm.setup("fit")
    model.check_data(dm)  # the module's own check, before the trainer writes anything
    ckpt = cli.checkpoint
    if ckpt is not None and ckpt["hyper_parameters"]["backbone"] != model.hparams["backbone"]:
        raise UsageError(
            f"{cli.config.ckpt_path} holds a different model ({ckpt['hyper_parameters']['backbone']['class_path']}"
            " with other settings) than the one configured; resume with the run's own config"
        )


def _run_dirs(trainer: Any) -> list[Path]:
    dirs = []
    for lg in trainer.loggers:
        path = getattr(lg, "log_dir", None)
        if path:
            dirs.append(Path(path))
    return dirs


def train_main(args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = ()) -> Any:
    """Parse, check, build and fit; returns the CLI (model, datamodule, trainer) for inspection.

    Raises :class:`UsageError` (or ``ValueError``) for input problems; see :func:`main`.
    """
    import pytorch_lightning as pl

    from infodecomp.lightning.module import DiffusionModule

    cls = _make_cli_class()
    cli = cls(
        DiffusionModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=list(args) if args is not None else None,
        seed_everything_default=0,
        parser_kwargs={"default_config_files": [str(p) for p in default_config_files], "exit_on_error": False},
        save_config_kwargs={"overwrite": True},
    )
    _check_before_fit(cli)
    trainer = cli.trainer
    ckpt = cli.checkpoint
    if ckpt is not None and trainer.max_steps != -1 and ckpt.get("global_step", 0) >= trainer.max_steps:
        print(f"{cli.config.ckpt_path} already reached max_steps={trainer.max_steps} "  # noqa: T201
              f"(step {ckpt.get('global_step')}): nothing to train; raise --trainer.max_steps to go on")
        return cli
    if ckpt is not None:
        from pytorch_lightning.loggers import CSVLogger

        from infodecomp.lightning.loggers import ContinueCSVMetrics

        saved = (ckpt.get("infodecomp_run") or {}).get("loggers") or []
        for lg in trainer.loggers:
            if isinstance(lg, CSVLogger):
                rows = next((e.get("rows") for e in saved if e["class"] == type(lg).__name__), None)
                # (a checkpoint that did not count them: the rows of the steps before it)
                trainer.callbacks.append(ContinueCSVMetrics(lg, rows or 0, ckpt.get("global_step", 0)))
        # the data order is resumable through the data module's state (not the loader's), and
        # ContinueCSVMetrics puts back the rows that the CSV logger clears
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
    before = {p: p.exists() for p in _run_dirs(trainer)}
    try:
        trainer.fit(cli.model, cli.datamodule, ckpt_path=cli.config.ckpt_path)
    except BaseException:
        # a run that failed before its first checkpoint leaves no empty run directory behind
        for path, existed in before.items():
            if not existed and path.is_dir() and not any(path.rglob("*.ckpt")):
                shutil.rmtree(path, ignore_errors=True)
        raise
    last = next((Path(cb.last_model_path) for cb in trainer.checkpoint_callbacks
                 if getattr(cb, "last_model_path", "")), None)
    if trainer.is_global_zero and last is not None:
        print(f"last checkpoint: {last}")  # noqa: T201 - the CLI's final word to its user
    return cli


def one_line(err: BaseException) -> str:
    """An exception's message on one line. jsonargparse wraps a class's own error (``batch_size
    must be >= 1``) in a report on every type it tried; the class's own sentence is what counts."""
    text = " ".join(str(err).split())
    own = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", text)
    if own:
        key = re.match(r'Parser key "([^"]+)"', text)
        text = f"{key.group(1)}: {own.group(1)}" if key else own.group(1)
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv: Sequence[str] | None = None, prog: str = "train.py") -> int:
    """``train.py``'s entry: exit status 0, or 2 with one line for an input error."""
    from_command_line = argv is None
    if from_command_line:
        # LightningCLI reads sys.argv itself (and DDP re-runs it for every process)
        verbose = "--verbose" in sys.argv
        sys.argv = [a for a in sys.argv if a != "--verbose"]
        argv = sys.argv[1:]
    else:
        argv = list(argv)
        verbose = "--verbose" in argv
        argv = [a for a in argv if a != "--verbose"]
    try:
        precheck(argv)
        from jsonargparse import ArgumentError
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        input_errors: tuple[type[BaseException], ...] = (UsageError, ValueError, FileNotFoundError,
                                                         MisconfigurationException, ArgumentError)
    except UsageError as err:
        if verbose:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        train_main(None if from_command_line else argv, default_config_files=[CONFIGS / "default.yaml"])
    except input_errors as err:
        if verbose:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


__all__ = ["CONFIGS", "UsageError", "main", "precheck", "train_main"]
