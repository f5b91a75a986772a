"""Pretrained latent text-to-image models (the Stable Diffusion family) as text probes' models.

:class:`StableDiffusionModel` loads a ``StableDiffusionPipeline``-compatible directory (``unet``,
``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``, ``model_index.json``) with
``from_pretrained`` and nothing from a hub. It is a :class:`~infodecomp.interface.TextDenoiser`
(the text probes' model) with the latent hooks filled in:

* images in ``[-1, 1]`` become latents with the VAE (posterior mean times ``scaling_factor``);
* prompts become CLIP token ids (cut at the tokenizer's limit with a warning naming what was
  cut); the text encoder runs once per distinct prompt in each forward;
* a log-SNR maps to a fractional scheduler timestep by interpolating ``logit(alphas_cumprod)``,
  and estimates are integrated inside the scheduler's trained log-SNR range
  (:attr:`trained_range`, reported with every estimate through :meth:`sampler`);
* ``epsilon`` and ``v_prediction`` outputs become noise predictions;
* maps live at latent resolution; :meth:`~StableDiffusionModel.to_image_resolution` spreads
  them over the image; :meth:`~StableDiffusionModel.decode_latents` turns latents into images.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from infodecomp.diffusion.proposals import TruncatedLogistic
from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.interface import LogSNRRange, TextDenoiser
from infodecomp.models.pretrained import logsnr_to_timestep, noise_prediction, scheduler_logsnr

log = logging.getLogger(__name__)

COMPONENTS: dict[str, tuple[str, ...]] = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer_config.json", "vocab.json", "tokenizer.json"),
    "scheduler": ("scheduler_config.json",),
}


def check_pipeline_dir(path: str | Path) -> Path:
    """The directory, if it holds every component; otherwise a ``ValueError`` naming what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"model directory not found: {root}")
    if not (root / "model_index.json").is_file():
        raise ValueError(f"{root} is not a diffusers pipeline directory (no model_index.json)")
    for name, files in COMPONENTS.items():
        if not (root / name).is_dir():
            raise ValueError(f"{root} lacks the {name!r} component (no {name}/ directory)")
        if not any((root / name / f).is_file() for f in files):
            raise ValueError(f"{root}/{name} has none of {list(files)}: the {name!r} component is incomplete")
    return root


def _quiet_hub_libraries() -> None:
    """Loading messages and progress bars of diffusers/transformers would bury our one-line errors."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class StableDiffusionModel(TextDenoiser):
    """A local Stable-Diffusion-style pipeline as a text-conditioned latent denoiser.

    Args:
        path: the pipeline directory (``save_pretrained`` layout).
        device: where to run (default: CUDA when available).
        dtype: weights' dtype (default: :func:`default_dtype`); estimates accumulate in fp32/64.
    """

    def __init__(self, path: str | Path, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        root = check_pipeline_dir(path)
        _quiet_hub_libraries()
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or default_dtype(self.device)
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                root, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                local_files_only=True, dtype=self.dtype,
            )
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the pipeline in {root}: {err}") from err
        self.path = root
        self.unet_model = pipe.unet.to(self.device).eval()
        self.vae = pipe.vae.to(self.device).eval()
        self.text_encoder = pipe.text_encoder.to(self.device).eval()
        self.tokenizer = pipe.tokenizer
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"{root}: prediction_type {self.prediction_type!r} is not supported "
                             "(epsilon, v_prediction)")
        self.logsnr_table = scheduler_logsnr(self.scheduler).to(self.device)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.max_tokens = int(self.tokenizer.model_max_length)
        self.max_words = self.max_tokens - 2  # a word is at least one token; start and end tokens take two
        size = self.unet_model.config.sample_size
        self.image_shape = (self.unet_model.config.in_channels, size, size) if isinstance(size, int) else (
            self.unet_model.config.in_channels, *size)
        self.unet = self.unet_model  # cross-attention maps are recorded here

    # ---- the denoiser ----------------------------------------------------------------------------
    @property
    def trained_range(self) -> LogSNRRange:
        """The log-SNRs the scheduler trained on: ``logit(alphas_cumprod)`` at its first and last step."""
        return LogSNRRange(float(self.logsnr_table[-1]), float(self.logsnr_table[0]))

    def sampler(self, **kwargs: Any) -> LogSNRSampler:
        """A log-SNR sampler whose proposal covers exactly the trained range."""
        r = self.trained_range
        return LogSNRSampler(proposal=TruncatedLogistic.from_range(r.low, r.high), **kwargs)

    @torch.no_grad()
    def __call__(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        ids = self._complete(cond, z.shape[0])
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        states = self.text_encoder(unique.to(self.device))[0][inverse]
        t = logsnr_to_timestep(logsnr.to(self.device), self.logsnr_table)
        out = self.unet_model(z.to(self.device, self.dtype), t.to(self.dtype),
                              encoder_hidden_states=states.to(self.dtype)).sample
        return noise_prediction(out.to(z.dtype), z, logsnr.to(z.dtype), self.prediction_type)

    def _complete(self, cond: Mapping[str, Tensor] | None, rows: int) -> Tensor:
        if cond is None or cond.get("text") is None:
            return self.encode([""] * rows)["text"]
        return cond["text"]

    def batch_conditions(self, conds: Sequence[Mapping[str, Tensor] | None], sizes: Sequence[int]) -> dict:
        return {"text": torch.cat([self._complete(c, n) for c, n in zip(conds, sizes, strict=True)])}

    # ---- text --------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """CLIP token ids ``(B, model_max_length)``; long prompts are cut with a warning."""
        tok = self.tokenizer
        for p in prompts:
            if not isinstance(p, str):
                raise ValueError(f"a prompt must be a string, got {type(p).__name__}: {p!r}")
            ids = tok(p, add_special_tokens=False)["input_ids"]
            if tok.unk_token_id is not None and tok.unk_token_id in ids:  # no special tokens were added
                bad = [w for w in p.split() if tok.unk_token_id in tok(w, add_special_tokens=False)["input_ids"]]
                raise ValueError(f"the tokenizer cannot encode {bad} in prompt {p!r}")
            if len(ids) > self.max_tokens - 2:
                cut = tok.decode(ids[self.max_tokens - 2 :])
                warnings.warn(f"prompt {p!r} has {len(ids)} tokens but the text encoder reads {self.max_tokens - 2}; "
                              f"cut from the end: {cut!r}", stacklevel=3)
        batch = tok(list(prompts), padding="max_length", max_length=self.max_tokens, truncation=True,
                    return_tensors="pt")
        return {"text": batch["input_ids"].to(self.device)}

    def token_positions(self, words: Sequence[str]) -> list[list[int]]:
        """Encoder positions of each word's tokens (position 0 holds the start token)."""
        out, pos = [], 1
        for w in words:
            n = len(self.tokenizer(w, add_special_tokens=False)["input_ids"])
            out.append([p for p in range(pos, pos + n) if p < self.max_tokens - 1])
            pos += n
        return out

    # ---- images ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in ``[-1, 1]`` -> latents ``(B, 4, H/f, W/f)`` (posterior mean, scaled)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(images.shape)}")
        f = self.vae_scale
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"image sides must be multiples of {f} for this VAE, got {tuple(images.shape[-2:])}")
        dist = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        return (dist.mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Latents ``(B, 4, h, w)`` -> images ``(B, 3, h f, w f)`` in ``[-1, 1]``."""
        out = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.device, self.dtype)).sample
        return out.float().clamp(-1, 1)

    def to_image_resolution(self, maps: Tensor, size: Sequence[int]) -> Tensor:
        """Latent-resolution maps spread over the image (see :func:`to_image_resolution`)."""
        return to_image_resolution(maps, size)

    def image_size(self) -> int:
        """The side of the (square) images whose latents the UNet takes."""
        return self.image_shape[-1] * self.vae_scale


def to_image_resolution(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Latent-resolution maps ``(..., h, w)`` spread bilinearly over ``size`` with totals kept."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    up = F.interpolate(torch.nan_to_num(flat), size=tuple(size), mode="bilinear", align_corners=False)
    area = (size[0] * size[1]) / (maps.shape[-2] * maps.shape[-1])
    up = up / area
    nan = torch.isnan(flat).any(dim=(-1, -2), keepdim=True).expand_as(up)
    return torch.where(nan, torch.full_like(up, float("nan")), up).reshape(*lead, *size)


def load_image(path: str | Path, size: int) -> Tensor:
    """An RGB image file as ``(1, 3, size, size)`` in ``[-1, 1]``; a clear error otherwise."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image not found: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            mode = img.mode
            if mode != "RGB":
                raise ValueError(f"{p} is a {mode!r} image; an RGB image is needed (convert it first)")
            img = img.resize((size, size), Image.BICUBIC)
            arr = np.asarray(img, dtype=np.float32)
    except UnidentifiedImageError as err:
        raise ValueError(f"cannot read image {p}: not an image file PIL recognises") from err
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1)[None]
