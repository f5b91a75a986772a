"""Pretrained discrete-time diffusers UNets as continuous log-SNR backbones.

A DDPM-style scheduler defines ``alphas_cumprod[t]``; in the VP channel the trained log-SNR at
step ``t`` is ``logit(alphas_cumprod[t])``. :class:`DiffusersUNetAdapter` maps any log-SNR to a
fractional timestep by interpolating that (decreasing) table, feeds it to the UNet, and turns
an ``epsilon`` or ``v_prediction`` output into a noise prediction. Log-SNRs outside the trained
range are clamped to its ends (with a one-time warning); ``trained_range`` reports the range so
integrals can stay inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infodecomp.diffusion.channel import signal_noise_scales
from infodecomp.interface import LogSNRRange
from infodecomp.models.backbones import Backbone

log = logging.getLogger(__name__)


def scheduler_logsnr(scheduler: Any) -> Tensor:
    """Trained log-SNR per timestep, ``logit(alphas_cumprod)``, ``(T,)`` float64 (decreasing in t)."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod; a DDPM/DDIM-style scheduler is needed")
    ac = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
    return torch.log(ac) - torch.log1p(-ac)


def logsnr_to_timestep(logsnr: Tensor, table: Tensor) -> Tensor:
    """Fractional timestep for each log-SNR by linear interpolation in the decreasing ``table``.

    Values outside ``[table[-1], table[0]]`` map to the end timesteps.
    """
    rev = table.flip(0).to(logsnr.device)  # increasing
    a = logsnr.to(torch.float64).clamp(rev[0], rev[-1])
    idx = torch.searchsorted(rev, a, right=True).clamp(1, len(rev) - 1)
    lo, hi = rev[idx - 1], rev[idx]
    frac = ((a - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    pos_rev = (idx - 1).to(torch.float64) + frac  # position in the increasing table
    return (len(rev) - 1) - pos_rev


def noise_prediction(out: Tensor, z: Tensor, logsnr: Tensor, prediction_type: str) -> Tensor:
    """A scheduler-convention UNet output as a noise prediction (``epsilon`` or ``v_prediction``)."""
    if prediction_type == "epsilon":
        return out
    if prediction_type != "v_prediction":
        raise ValueError(f"prediction_type {prediction_type!r} is not supported (epsilon, v_prediction)")
    a, s = signal_noise_scales(logsnr.to(z.dtype))
    shape = (-1,) + (1,) * (z.ndim - 1)
    return a.reshape(shape) * out + s.reshape(shape) * z  # eps from v = a eps - s x


class DiffusersUNetAdapter(Backbone):
    """A pretrained ``UNet2DModel`` / ``UNet2DConditionModel`` plus its scheduler, as a backbone.

    Args:
        path: a directory saved with ``save_pretrained`` holding ``unet/`` and ``scheduler/``
            (a pipeline layout), or a UNet directory with ``scheduler_path`` given.
        scheduler_path: where the scheduler config lives, if not ``path/scheduler``.
        class_conditional: pass ``cond["label"]`` as ``class_labels`` (``-1`` is not supported by
            pretrained class embeddings and raises).
    """

    def __init__(self, path: str, scheduler_path: str | None = None, class_conditional: bool = False) -> None:
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

        root = Path(path)
        unet_dir = root / "unet" if (root / "unet").is_dir() else root
        sched_dir = Path(scheduler_path) if scheduler_path else root / "scheduler"
        for what, where in (("unet", unet_dir / "config.json"), ("scheduler", sched_dir / "scheduler_config.json")):
            if not where.is_file():
                raise ValueError(f"cannot load the pretrained model: the {what} config is missing ({where})")
        config = UNet2DModel.load_config(unet_dir)
        cls = UNet2DConditionModel if config.get("_class_name") == "UNet2DConditionModel" else UNet2DModel
        self.unet = cls.from_pretrained(unet_dir)
        self.scheduler = DDPMScheduler.from_pretrained(sched_dir)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported (epsilon, v_prediction)")
        self.register_buffer("logsnr_table", scheduler_logsnr(self.scheduler), persistent=False)
        self.init_args = {"path": str(path), "scheduler_path": scheduler_path, "class_conditional": class_conditional}
        channels, size = self.unet.config.in_channels, self.unet.config.sample_size
        self.input_shape = (channels, size, size) if isinstance(size, int) else (channels, *size)
        self.condition_spec = {"label": ("label", 0)} if class_conditional else {}
        self._warned = False

    @property
    def trained_range(self) -> LogSNRRange:
        return LogSNRRange(float(self.logsnr_table[-1]), float(self.logsnr_table[0]))

    def timestep(self, logsnr: Tensor) -> Tensor:
        rng = self.trained_range
        if not self._warned and ((logsnr < rng.low).any() or (logsnr > rng.high).any()):
            log.warning("log-SNR outside the scheduler's trained range %s is clamped to its ends", rng)
            self._warned = True
        return logsnr_to_timestep(logsnr, self.logsnr_table)

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        t = self.timestep(logsnr).to(z.dtype)
        kwargs = {}
        if "label" in self.condition_spec:
            labels = cond["label"]
            if (labels < 0).any():
                raise ValueError("this pretrained class-conditional UNet has no null class; give every label")
            kwargs["class_labels"] = labels
        return noise_prediction(self.unet(z, t, **kwargs).sample, z, logsnr, self.prediction_type)
