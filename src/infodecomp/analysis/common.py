"""What every analysis entry point shares: the user-input error, finding and loading a run, and
writing a report directory so that an interrupted analysis never leaves a half-written one.

This is the top layer of infodecomp: it may import anything below it, and nothing below imports it.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

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


def partial_dir(out: Path) -> Path:
    """Where a report is assembled before it is moved to ``out``: one fixed hidden name beside it,
    so an interrupted run leaves one directory that the next run reuses or removes, never more."""
    return out.parent / f".{out.name}.partial"


def check_writable(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a Path; AnalysisError if it already holds a report and ``overwrite`` is false."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise AnalysisError(f"{out} already holds a report; pass --overwrite to replace it")
    return out


def write_atomically(out: str | Path, fill: Callable[[Path], T], *, overwrite: bool = False,
                     keep_partial: bool = False) -> T:
    """Run ``fill(partial)`` and move the finished directory to ``out``.

    The directory is assembled in :func:`partial_dir` (ordinary permissions). On an error or an
    interrupt it is removed, unless ``keep_partial`` (a ``fill`` that resumes from what it finds
    there); a SIGKILL leaves it behind, and the next run starts from it or clears it. ``out``
    itself only changes once everything is written. Raises AnalysisError if ``out`` already
    holds files and ``overwrite`` is false.
    """
    out = check_writable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(out)
    if tmp.exists() and not keep_partial:
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    try:
        result = fill(tmp)
    except BaseException:
        if not keep_partial:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)
    return result


def analysis_run(out: Path, job_type: str, config: Mapping[str, Any]) -> Any:
    """A W&B run for an analysis written to ``out`` (online with credentials, offline otherwise)."""
    import wandb

    from infodecomp.lightning.loggers import wandb_credentials_available

    mode = "online" if wandb_credentials_available() else "offline"
    return wandb.init(project="infodecomp", job_type=job_type, dir=str(out), mode=mode, config=dict(config))
