"""Loggers: W&B that goes offline by itself when no credentials are configured."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """True when an API key is in the environment or in ``~/.netrc`` for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(Path.home() / ".netrc").hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline (runs land in ``save_dir/wandb``, syncable later with
    ``wandb sync``) when no credentials are configured or ``WANDB_MODE=offline`` is set."""

    def __init__(self, save_dir: str = "outputs/runs", project: str = "infodecomp", name: str | None = None,
                 offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_credentials_available()
        if offline:
            log.info("W&B: no credentials configured, logging offline under %s", save_dir)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(save_dir=save_dir, project=project, name=name, offline=offline, **kwargs)
