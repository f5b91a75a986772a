"""``train.py``: LightningCLI over :class:`~infodecomp.lightning.DiffusionModule` (YAML under ``configs/``).

What this adds to LightningCLI:

* **Presets by name.** ``--config experiment/vector`` (``.yaml`` optional) names a config shipped
  in the package (:data:`CONFIGS`) from any directory; a clone's ``configs/...`` paths work as
  they are, and from elsewhere too. ``--help`` and the not-found error list the presets.
* **Input errors in one line.** A missing config or checkpoint, a bad option, a data root that
  does not exist, ``batch_size 0``, a checkpoint of another model: ``PROG: error: ...`` on
  stderr and exit status 2 (the traceback with ``--verbose``), PROG being the command as typed
  (``train.py``, ``infodecomp-train``). The cheap checks run before torch is imported, so they
  answer at once: files named on the command line, every config file's YAML and keys
  (:mod:`infodecomp.config_keys`), ``--trainer.X``/``--model.X`` options (never abbreviated).
  Nothing is created by a run that fails its checks: data, model (conditions included) and run
  directories are checked before the trainer writes anything, and a run that fails inside
  ``fit`` before its first checkpoint removes the empty run directory it made.
* **Nothing written over.** A new run never writes into an existing run directory (a
  continuation is asked for with ``--ckpt_path``) or where a file stands; each run directory it
  makes holds a :data:`infodecomp.markers.MARKER` naming infodecomp as its writer.
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

from infodecomp import config_keys
from infodecomp.markers import file_in_the_way

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The configs shipped with the package (``configs/`` in a checkout links here)."""


class UsageError(ValueError):
    """A problem with the user's input: reported as one line, exit status 2."""


def _option_values(argv: Sequence[str], names: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(index of the value, option, value)`` for every ``--opt value`` / ``--opt=value`` of
    ``names`` in ``argv``."""
    found = []
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key in names:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{key} needs a value")
                found.append((i + 1, key, argv[i + 1]))
            else:
                found.append((i, key, value))
    return found


def presets() -> list[str]:
    """The names ``--config NAME`` takes from any directory: the whole-run configs under
    :data:`CONFIGS` (``debug``, ``experiment/vector``, ...; ``data/``, ``model/`` and ``trainer/``
    hold the sections they are made of)."""
    return sorted([p.stem for p in CONFIGS.glob("*.yaml")]
                  + [f"experiment/{p.stem}" for p in (CONFIGS / "experiment").glob("*.yaml")])


def presets_note() -> str:
    return f"presets (--config NAME, from any directory): {', '.join(presets())}"


def resolve_config(value: str) -> Path:
    """The file ``--config value`` names: an existing path as it is; otherwise a preset of
    :data:`CONFIGS` by its name (``experiment/vector``, ``.yaml`` optional), also when written
    as a clone's path (``configs/experiment/vector.yaml`` from another directory)."""
    path = Path(value)
    if path.is_file():
        return path
    parts = path.parts
    if "configs" in parts:  # the tail of a clone's path: configs/<name>
        parts = parts[len(parts) - parts[::-1].index("configs"):]
    if parts and not path.is_absolute():
        preset = CONFIGS.joinpath(*parts)
        if preset.suffix not in (".yaml", ".yml"):
            preset = preset.with_name(preset.name + ".yaml")
        preset = preset.resolve()
        if preset.is_file() and CONFIGS.resolve() in preset.parents:
            return preset
    raise UsageError(f"config file not found: {value}; {presets_note()}")


_EXPECTED = "expected a YAML mapping with sections such as trainer, model, data"


def _read_yaml(text: str, what: str) -> Any:
    import yaml  # (PyYAML: light, and what jsonargparse reads configs with)

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise UsageError(f"{what}: YAML syntax error{where}: {problem}") from err


def _unknown(keys: Any, allowed: Sequence[str], what: str) -> None:
    import difflib

    unknown = [str(k) for k in keys if k not in allowed]
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if len(allowed) <= 10:
        hint += f"; allowed: {', '.join(allowed)}"
    else:
        hint += "; see --help"
    raise UsageError(f"{what}: unknown key{'s' if len(unknown) > 1 else ''} "
                     f"{', '.join(map(repr, unknown))}{hint}")


def _section_file(value: Any, base: Path | None) -> Path | None:
    """The file a section's value names (``trainer: trainer/default.yaml``), relative to the
    config that names it, as jsonargparse reads it; ``None`` for anything else."""
    if not isinstance(value, str) or not value.endswith((".yaml", ".yml", ".json")):
        return None
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise UsageError(f"config file not found: {value}" + (f" (named in {base})" if base else ""))
    return path


def check_section(section: str, value: Any, what: str, base: Path | None) -> None:
    """A config's ``trainer:``/``model:``/``data:`` section (a mapping, or a file holding one)."""
    path = _section_file(value, base)
    if path is not None:
        what = str(path)
        value = _read_yaml(path.read_text(), what)
        if value is None:
            raise UsageError(f"{what} is empty: expected a YAML mapping of {section} settings")
    if value is None or isinstance(value, str):
        return  # unset, or a class name (--data VectorTaskDataModule)
    if not isinstance(value, dict):
        raise UsageError(f"{what}: {section} must be a mapping of settings, got a {type(value).__name__}")
    if section in config_keys.SECTION_KEYS:
        _unknown(value, config_keys.SECTION_KEYS[section], f"{what}: {section}")
    if section == "trainer":
        _check_output_dirs(value, what)


def _check_output_dirs(trainer: dict, what: str) -> None:
    """The directories a ``trainer:`` section names (loggers' ``save_dir``, ``default_root_dir``,
    checkpoint ``dirpath``) are not files: caught again, exactly, once the trainer is built
    (:func:`_check_run_dirs`); here it answers before torch loads."""
    specs = [s for key in ("logger", "callbacks") for s in _as_list(trainer.get(key)) if isinstance(s, dict)]
    named = [trainer.get("default_root_dir")]
    named += [(s.get("init_args") or {}).get(k) for s in specs for k in ("save_dir", "dirpath")]
    for value in named:
        if isinstance(value, str) and value:
            blocker = file_in_the_way(Path(value))
            if blocker is not None:
                raise UsageError(f"{what}: output directory {value} cannot be made: {blocker} is a file, not a directory")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def check_config(text: str, what: str, base: Path | None) -> None:
    """A whole config (``--config``): YAML, a mapping, known sections and known settings."""
    data = _read_yaml(text, what)
    if data is None:
        raise UsageError(f"{what} is empty: {_EXPECTED}")
    if not isinstance(data, dict):
        raise UsageError(f"{what} holds a {type(data).__name__}, not a mapping: {_EXPECTED}")
    _unknown(data, config_keys.TOP_LEVEL_KEYS, what)
    for section in ("trainer", "model", "data"):
        check_section(section, data.get(section), what, base)


def _check_options(argv: Sequence[str]) -> None:
    """``--name`` options this CLI has, and ``--trainer.X``/``--model.X`` settings that exist
    (jsonargparse says so too, but only once torch has loaded)."""
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        key = arg[2:].partition("=")[0].rstrip("+")  # (--trainer.callbacks+=...: append)
        head, _, rest = key.partition(".")
        if head not in config_keys.TOP_LEVEL_OPTIONS or (
                rest and head in config_keys.SECTION_KEYS
                and rest.partition(".")[0].rstrip("+") not in config_keys.SECTION_KEYS[head]):
            import difflib

            names = (config_keys.SECTION_KEYS[head] if head in config_keys.SECTION_KEYS and rest
                     else config_keys.TOP_LEVEL_OPTIONS)
            typed = rest.partition(".")[0] if head in config_keys.SECTION_KEYS and rest else head
            close = difflib.get_close_matches(typed, names, n=1)
            option = f"--{head}.{close[0]}" if close and names is not config_keys.TOP_LEVEL_OPTIONS else (
                f"--{close[0]}" if close else "")
            hint = f" (did you mean {option}?)" if option else " (see --help)"
            raise UsageError(f"unrecognized arguments: {arg}{hint}")


def precheck(argv: Sequence[str]) -> list[str]:
    """Checks that need no heavy import; returns ``argv`` with presets named by their path.

    Every config file named exists (or is a preset) and reads as a config with known keys,
    every checkpoint named exists, every ``--trainer.X``/``--model.X`` option exists.
    """
    argv = list(argv)
    _check_options(argv)
    paths = ("--trainer.default_root_dir", "--trainer.logger.init_args.save_dir", "--trainer.logger.save_dir")
    for _, key, value in _option_values(argv, ("--trainer.logger", "--trainer.callbacks", *paths)):
        if key in paths:
            _check_output_dirs({"default_root_dir": value}, key)
        elif value.lstrip().startswith(("{", "[")):
            _check_output_dirs({key.rpartition(".")[2]: _read_yaml(value, key)}, key)
    for i, key, value in _option_values(argv, ("--config", "-c", "--ckpt_path", "--trainer", "--model", "--data")):
        if key == "--ckpt_path":
            if value not in ("last", "null", "None") and not Path(value).is_file():
                raise UsageError(f"checkpoint not found: {value}")
            continue
        section = key.lstrip("-")
        if value.lstrip().startswith(("{", "[")):  # an inline YAML config
            if key in ("--config", "-c"):
                check_config(value, f"{key} {value}", None)
            else:
                check_section(section, _read_yaml(value, key), key, None)
            continue
        if key in ("--config", "-c"):
            path = resolve_config(value)
            check_config(path.read_text(), value, path.parent)
            if str(path) != value:
                argv[i] = str(path) if argv[i] == value else f"{key}={path}"
        elif value.endswith((".yaml", ".yml", ".json")):
            check_section(section, value, key, None)
    return argv


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


def _check_run_dirs(trainer: Any, fresh: bool) -> None:
    """The run's directories (its loggers' and any checkpoint ``dirpath``) can be made, and a new
    run does not write into one that holds files: a run is continued only by ``--ckpt_path``."""
    dirs = list(_run_dirs(trainer))
    explicit = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    for path in dirs + explicit:
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise UsageError(f"run directory {path} cannot be made: {blocker} is a file, not a directory")
    from pytorch_lightning.utilities import rank_zero_only

    # (DDP's other processes start once rank 0 is in fit, and may find its new directory made)
    fresh = fresh and rank_zero_only.rank == 0
    for path in dirs + explicit:
        if fresh and path.is_dir() and any(path.iterdir()):
            raise UsageError(
                f"run directory {path} already holds files, which a new run would overwrite: continue that run "
                "with --ckpt_path (its checkpoints/last.ckpt), or give the logger another version or name")


def _marker_callback(dirs: Sequence[Path]) -> Any:
    """A callback that marks the run directories this run made as infodecomp's (the tools
    overwrite only what carries the marker). At train start: the loggers have made them."""
    import pytorch_lightning as pl

    from infodecomp.markers import write_marker

    class MarkRunDirs(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not trainer.is_global_zero:
                return
            for path in dirs:
                path.mkdir(parents=True, exist_ok=True)
                write_marker(path, "infodecomp-train")

    return MarkRunDirs()


def _check_before_fit(cli: Any) -> None:
    """Everything that can be checked before the trainer writes anything."""
    dm, model = cli.datamodule, cli.model
    _check_run_dirs(cli.trainer, fresh=cli.checkpoint is None)
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


def train_main(args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = (),
               prog: str | None = None) -> Any:
    """Parse, check, build and fit; returns the CLI (model, datamodule, trainer) for inspection.

    ``prog`` names the program in usage and help (the command the user typed).

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
        # allow_abbrev: --trainer.max_step is a typo, not --trainer.max_steps
        parser_kwargs={"default_config_files": [str(p) for p in default_config_files], "exit_on_error": False,
                       "allow_abbrev": False, "prog": prog or Path(sys.argv[0]).name,
                       "epilog": f"{presets_note()}; they are the files under {CONFIGS}."},
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
    trainer.callbacks.append(_marker_callback([p for p, existed in before.items() if not existed]))
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


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``train.py``'s and ``infodecomp-train``'s entry: exit status 0, or 2 with one line for an
    input error. Messages name the program as it was called (``prog``; by default the command
    line's, or ``train.py`` for a call with ``argv``)."""
    from_command_line = argv is None
    prog = prog or (Path(sys.argv[0]).name if from_command_line else "train.py")
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
        argv = precheck(argv)
        if from_command_line:
            sys.argv[1:] = argv  # presets by their path (DDP re-runs sys.argv)
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
        train_main(None if from_command_line else argv, default_config_files=[CONFIGS / "default.yaml"], prog=prog)
    except input_errors as err:
        if verbose:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


__all__ = ["CONFIGS", "UsageError", "main", "precheck", "presets", "resolve_config", "train_main"]
