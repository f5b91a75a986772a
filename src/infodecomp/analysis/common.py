"""What every analysis entry point shares: the user-input error, finding and loading a run, and
writing a report directory so that an interrupted analysis never leaves a half-written one.

This is the top layer of infodecomp: it may import anything below it, and nothing below imports it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from infodecomp.markers import file_in_the_way, marked_by, read_marker, write_marker

log = logging.getLogger(__name__)
T = TypeVar("T")


class AnalysisError(Exception):
    """A problem with the user's input (reported as one line, exit status 2)."""


def find_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file as given, or the newest ``last.ckpt`` under a run directory."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = sorted(p.rglob("last.ckpt"), key=lambda q: q.stat().st_mtime)
        if found:
            return found[-1]
        raise AnalysisError(f"no last.ckpt under {p}")
    raise AnalysisError(f"checkpoint or run directory not found: {p}")


def find_config(ckpt: Path, config: str | Path | None) -> Path:
    """The training config of a checkpoint: ``config`` if given, else the run's ``config.yaml``."""
    if config is not None:
        c = Path(config)
        if not c.is_file():
            raise AnalysisError(f"config file not found: {c}")
        return c
    for cand in (ckpt.parent.parent / "config.yaml", ckpt.parent / "config.yaml"):
        if cand.is_file():
            return cand
    raise AnalysisError(f"no config.yaml next to {ckpt}; pass --config with the run's training config")


def instantiate(spec: Mapping[str, Any]) -> Any:
    """``{"class_path": ..., "init_args": {...}}`` -> an instance (as LightningCLI builds it)."""
    module_name, _, cls_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**(spec.get("init_args") or {}))


def normalise_config(obj: Any) -> Any:
    """A config value in a form where equal settings compare equal: tuples become lists, and an
    empty mapping or list means the same as ``None`` (YAML writes ``null`` where the checkpoint
    keeps ``{}``)."""
    if isinstance(obj, Mapping):
        return {k: normalise_config(v) for k, v in obj.items()} or None
    if isinstance(obj, list | tuple):
        return [normalise_config(v) for v in obj] or None
    return obj


def load_run(path: str | Path, config: str | Path | None = None) -> tuple[Any, Any, Path, Path]:
    """Checkpoint or run directory -> ``(module, data module, checkpoint, config path)``, checking
    that the config describes the checkpoint's model. Every input problem is an AnalysisError."""
    import yaml

    from infodecomp.lightning.module import load_module

    ckpt = find_checkpoint(path)
    try:
        module = load_module(ckpt)
    except ValueError as err:
        raise AnalysisError(str(err)) from err
    cfg_path = find_config(ckpt, config)
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as err:
        raise AnalysisError(f"cannot parse {cfg_path}: {err}") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict) or "class_path" not in cfg["data"]:
        raise AnalysisError(f"{cfg_path} has no data section with a class_path (is it a training config?)")
    model_cfg = (cfg.get("model") or {}).get("backbone")
    if isinstance(model_cfg, dict) and normalise_config(model_cfg.get("init_args")) != normalise_config(
        module.hparams["backbone"]["init_args"]
    ):
        raise AnalysisError(f"{cfg_path} describes a different model than {ckpt} (backbone settings differ)")
    try:
        dm = instantiate(cfg["data"])
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise AnalysisError(f"cannot build the data module from {cfg_path}: {err}") from err
    shape = getattr(dm, "input_shape", None)
    if shape is not None and tuple(shape) != module.input_shape:
        raise AnalysisError(f"the config's data have shape {tuple(shape)} but the model takes {module.input_shape}")
    return module, dm, ckpt, cfg_path


#: exit status of an analysis stopped by SIGTERM (128 + 15, as a shell reports it)
STOPPED_BY_SIGTERM = 143


def stop_if_terminated(trainer: Any, done: str) -> None:
    """Exit with :data:`STOPPED_BY_SIGTERM` if this process was sent SIGTERM (``kill``, a
    scheduler's time limit), saying in one line what was finished.

    Lightning's signal connector only notes the signal, and acts on it between validation batches
    alone: not in ``predict``, and not in the callbacks that run after the last batch, where the
    report's steps do their work. Called where finished work has just been saved, so that the same
    command continues from there."""
    if getattr(trainer, "received_sigterm", False):
        if getattr(trainer, "is_global_zero", True):
            print(f"stopped by SIGTERM after {done}; the same command continues from there", file=sys.stderr)
        raise SystemExit(STOPPED_BY_SIGTERM)


def partial_dir(out: Path) -> Path:
    """Where a report is assembled before it is moved to ``out``: one fixed hidden name beside it,
    so an interrupted run leaves one directory that the next run reuses or removes, never more."""
    return out.parent / f".{out.name}.partial"


#: finished reports written before the marker existed: every file of one of these sets
_UNMARKED_REPORTS = ({"report.json", "report.md"}, {"report.json", "summary.md"})
_COCO_ITEM = re.compile(r"\d{7}\.pt|\.\d{7}\.pt\.tmp\d+")


#: the tool name in the marker of every analysis output
ANALYZE = "infodecomp-analyze"


def default_output(kind: str, run: str | Path) -> Path:
    """Where an analysis of ``run`` goes without ``--out``: ``outputs/<kind>/<run name>`` under
    the working directory, never beside the run (which may sit inside the installed package).

    The run name is the run directory's name (of the directory holding a checkpoint, above its
    ``checkpoints/``); for a Lightning ``version_N`` directory, its parent's name in front
    (``outputs/runs/pid/version_0`` -> ``pid-version_0``).
    """
    p = Path(run).resolve()
    if p.is_file() or p.suffix == ".ckpt":
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    name = p.name or "run"
    if re.fullmatch(r"version_\d+", name) and p.parent.name:
        name = f"{p.parent.name}-{name}"
    return Path("outputs") / kind / name


def is_infodecomp_output(path: str | Path) -> bool:
    """Whether ``path`` is a directory an analysis wrote: it carries the marker of
    infodecomp-analyze (:mod:`infodecomp.markers`), or holds the files of a finished report of an
    earlier version, or only an interrupted COCO-IT run's ``items/``. A symbolic link never is,
    and neither is a training run's directory (marked by infodecomp-train)."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    if read_marker(p) is not None:  # a training run's directory is infodecomp's, but no report's to replace
        return marked_by(p, ANALYZE)
    names = {q.name for q in p.iterdir()}
    if any(want <= {n for n in names if (p / n).is_file() and not (p / n).is_symlink()} for want in _UNMARKED_REPORTS):
        return True
    items = p / "items"
    return names == {"items"} and items.is_dir() and not items.is_symlink() and all(
        _COCO_ITEM.fullmatch(q.name) and q.is_file() for q in items.iterdir())


def _check_location(out: Path) -> None:
    """AnalysisError unless ``out`` can be created: no regular file on its path, and its nearest
    existing ancestor a directory in which a directory can be made (tried, then removed: the
    permission bits do not tell for root, a read-only mount or /proc)."""
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise AnalysisError(f"cannot create {out}: {blocker} is a file, not a directory")
    anc = out.parent
    while not anc.exists():
        if anc.is_symlink():  # a dangling link: mkdir would fail on it
            raise AnalysisError(f"cannot create {out}: {anc} is a broken symbolic link")
        anc = anc.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".infodecomp-probe-", dir=anc))
    except OSError as err:
        raise AnalysisError(f"cannot create {out}: {anc} is not writable ({err.strerror})") from None


def check_output(out: str | Path, overwrite: bool = False, *, resume: bool = False) -> Path:
    """``out`` as a Path if an analysis may write it; otherwise AnalysisError (one line).

    The one rule for every writing subcommand (checked before torch loads and again just
    before the move into place): a free path, an empty directory, or, with ``overwrite``, a
    directory infodecomp wrote (:func:`is_infodecomp_output`). A regular file, a symbolic link
    or a directory holding anything else is never replaced. With ``resume`` (COCO-IT
    localization), an interrupted run of its own (``items/`` without ``report.json``) continues
    without ``overwrite``.
    """
    out = Path(out)
    if out.is_symlink():
        raise AnalysisError(f"{out} is a symbolic link; infodecomp will not replace it; choose another --out")
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"{out} is a file infodecomp did not write and will not be replaced; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if marked_by(out, "infodecomp-train"):
            raise AnalysisError(f"{out} is a training run's directory; an analysis never replaces it; "
                                "choose another --out")
        if not is_infodecomp_output(out):
            raise AnalysisError(f"{out} holds files infodecomp did not write and will not be replaced; "
                                "choose another --out")
        resumable = resume and (out / "items").is_dir() and not (out / "report.json").exists()
        if not overwrite and not resumable:
            raise AnalysisError(f"{out} holds an infodecomp report; pass --overwrite to replace it")
    _check_location(out)
    return out


def mark_output(directory: str | Path, subcommand: str) -> None:
    """Mark an output directory as written by ``subcommand`` of infodecomp-analyze."""
    write_marker(directory, ANALYZE, subcommand=subcommand)


def write_atomically(out: str | Path, fill: Callable[[Path], T], *, subcommand: str, overwrite: bool = False,
                     keep_partial: bool = False) -> T:
    """Run ``fill(partial)`` and move the finished directory, marked as ``subcommand``'s
    (:func:`mark_output`), to ``out``.

    The directory is assembled in :func:`partial_dir` (ordinary permissions). On an error or an
    interrupt it is removed, unless ``keep_partial`` (a ``fill`` that resumes from what it finds
    there); a SIGKILL leaves it behind, and the next run starts from it or clears it. ``out``
    itself only changes once everything is written. Raises AnalysisError if ``out`` may not be
    written (:func:`check_output`).
    """
    out = check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(out)
    if tmp.exists() and not keep_partial:
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    try:
        mark_output(tmp, subcommand)
        result = fill(tmp)
    except BaseException:
        if not keep_partial:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    check_output(out, overwrite)  # again: the analysis may have taken hours
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return result


def analysis_run(out: Path, job_type: str, config: Mapping[str, Any]) -> Any:
    """A W&B run for an analysis written to ``out`` (online with credentials, offline otherwise)."""
    import wandb

    from infodecomp.lightning.loggers import wandb_credentials_available

    mode = "online" if wandb_credentials_available() else "offline"
    return wandb.init(project="infodecomp", job_type=job_type, dir=str(out), mode=mode, config=dict(config))


def md_row(cells: Sequence[Any]) -> str:
    """One row of a markdown table; a ``|`` inside a cell (``I(x; shape | rest)``) is escaped so
    that it does not split the cell."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def md_head(columns: Sequence[str]) -> list[str]:
    """The header row and the separator of a markdown table."""
    return [md_row(columns), "|" + "---|" * len(columns)]
