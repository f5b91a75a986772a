"""Checkpoints written atomically on a local filesystem.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction, whose local temporary
file lives in the system's temp directory: where that is another filesystem, the final move is
a copy into place, and a kill during it leaves a truncated ``last.ckpt``. Here the file is
written next to its target as ``<name>.partial`` and renamed over it (``os.replace``, atomic on
POSIX and Windows), so a checkpoint on disk is always a whole one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO
from typing_extensions import override


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local checkpoints atomically (remote paths as before)."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        protocol = get_filesystem(path).protocol
        if not {"file", "local"} & set(protocol if isinstance(protocol, tuple | list) else (protocol,)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return None
