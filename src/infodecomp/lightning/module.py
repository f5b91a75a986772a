"""``DiffusionModule``: one LightningModule for vectors, labelled images and captioned images.

It trains noise prediction with log-SNRs drawn from a truncated logistic, drops each
conditioning variable independently (so one network gives ``eps_hat(z|y,c)``, ``eps_hat(z|c)``
and ``eps_hat(z)``), keeps an EMA copy of the weights, and *is* a denoiser: calling the module
as ``module(z, logsnr, cond)`` runs the EMA network, so every estimator in infodecomp works on
it unchanged.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from infodecomp.diffusion.channel import add_noise, signal_noise_scales
from infodecomp.diffusion.proposals import TruncatedLogistic
from infodecomp.diffusion.sampling import derive_seed
from infodecomp.diffusion.targets import ReferenceQueue, stable_target
from infodecomp.models.backbones import Backbone, build_backbone, describe
from infodecomp.models.conditioning import (
    batch_conditions,
    complete_condition,
    condition_log_weights,
    drop_conditions,
)

log = logging.getLogger(__name__)

#: a mixture readout is fitted by k-means (``MixtureReadout.init_from``) to at most this many numbers
#: of training images before the first step (64M: 20,000 images of 32x32x3, 256 MB in float32)
READOUT_POOL_VALUES = 1 << 26
Loss = Literal["information", "eps_mse", "v_mse"]
Prediction = Literal["eps", "v"]


class DiffusionModule(pl.LightningModule):
    """Train a conditional diffusion model whose denoiser infodecomp can read.

    Args:
        backbone: the network (see :mod:`infodecomp.models`).
        prediction: what the backbone outputs: ``"eps"`` (the noise) or ``"v"`` (``a eps - s x``,
            Salimans & Ho 2022). Either way the module returns a noise prediction
            (``eps_hat = a v_hat + s z``). With ``"v"`` the network's output carries ``x`` at low SNR
            with O(1) scale, which is where conditions such as an object's position make their
            difference; the ``eps`` output there is a tiny correction that is hard to learn.
        loss: ``"eps_mse"`` (mean squared noise error at log-SNRs drawn from the proposal),
            ``"v_mse"`` (the same error times ``1 + exp(-alpha)``, i.e. the squared error of ``v``,
            which weights low SNR up) or ``"information"`` (the noise error weighted by
            ``1 / q(alpha)``: a Monte-Carlo estimate of the likelihood bound's integral, rescaled by
            the range width to stay O(1)).
        logsnr_loc, logsnr_scale, logsnr_clip: the truncated-logistic training proposal.
        cond_dropout: probability that each conditioning variable of each example is replaced
            by its null during training.
        word_dropout: probability that each word of a caption is removed (text backbones).
        stable_target: size of the reference set for Stable Target Field training targets
            (Xu et al., ICLR 2023; :mod:`infodecomp.diffusion.targets`): the regression target
            becomes a posterior mean over the batch and the last ``stable_target`` training
            examples whose conditions agree, in place of the one example. It cuts the gradient
            noise where the noise is large, which is where the unconditional and single-label
            branches that MI compares are learned. ``0`` (default) uses the ordinary target.
        ema_decay: decay of the exponential moving average used for evaluation.
        lr, weight_decay, betas: AdamW settings.
        warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr`` over training.
        compile: ``torch.compile`` the backbone at fit start.
        init_from: a checkpoint (a training one or an :func:`export_checkpoint` file) whose EMA
            weights start this run, with a fresh optimizer and schedule: to train a finished model
            further, or fine-tune it with other settings. Its backbone must be this one's. A resumed
            run (``--ckpt_path``) takes its weights from the checkpoint it resumes, not from here.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: Loss = "eps_mse",
        prediction: Prediction = "eps",
        logsnr_loc: float = 0.0,
        logsnr_scale: float = 2.0,
        logsnr_clip: float = 6.0,
        cond_dropout: float = 0.2,
        word_dropout: float = 0.15,
        stable_target: int = 0,
        ema_decay: float = 0.999,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.99),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        compile: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if loss not in ("information", "eps_mse", "v_mse"):
            raise ValueError(f"loss must be 'information', 'eps_mse' or 'v_mse', got {loss!r}")
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
        if loss == "v_mse" and prediction != "v":
            raise ValueError("loss 'v_mse' weights the noise error by up to exp(12); use it with prediction='v'")
        for name, p in (("cond_dropout", cond_dropout), ("word_dropout", word_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if stable_target < 0:
            raise ValueError(f"stable_target must be >= 0 (0 turns it off), got {stable_target}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        # the optimizer's numbers, checked here: AdamW would reject them only inside fit, after
        # the loggers have made their run directories
        if not (math.isfinite(lr) and lr >= 0):  # (0 keeps the weights: init_from's tests use it)
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(betas)}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if not isinstance(backbone, Backbone):
            raise ValueError(f"backbone must be an infodecomp Backbone, got {type(backbone).__name__}")
        self.save_hyperparameters(ignore=["backbone"])
        self.hparams["backbone"] = backbone.config
        self.backbone = backbone
        backbone.prediction = prediction
        self.ema = AveragedModel(backbone, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.ema.requires_grad_(False)
        if init_from:
            self._start_from(init_from)
        self.proposal = TruncatedLogistic(logsnr_loc, logsnr_scale, logsnr_clip)
        self._references = ReferenceQueue(stable_target, backbone.pad_id) if stable_target else None
        # the base of every training draw (log-SNR, noise, dropout): a run's seed, kept in its
        # checkpoints so that a resumed run draws exactly what the uninterrupted one would have
        self._draw_seed: int | None = None

    def _start_from(self, path: str | Path) -> None:
        try:
            ckpt = read_checkpoint(path)
        except ValueError as err:
            raise ValueError(f"init_from: {err}") from err
        theirs, ours = ckpt["hyper_parameters"]["backbone"], self.backbone.config
        if theirs != ours:
            name = lambda c: c["class_path"].rpartition(".")[2]  # noqa: E731
            differ = sorted(k for k in set(theirs["init_args"]) | set(ours["init_args"])
                            if theirs["init_args"].get(k) != ours["init_args"].get(k))
            what = name(theirs) if name(theirs) != name(ours) else f"{name(ours)} with other {', '.join(differ)}"
            raise ValueError(f"init_from: {path} holds a {what}; this run's backbone is a {name(ours)} as configured")
        weights = ema_weights(ckpt["state_dict"])
        if not weights:
            raise ValueError(f"init_from: {path} holds no EMA weights")
        self.backbone.load_state_dict(weights)
        self.ema.module.load_state_dict(weights)

    # ---- the denoiser -------------------------------------------------------------------------
    @property
    def condition_spec(self) -> dict:
        return self.backbone.condition_spec

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.backbone.input_shape)

    def _complete(self, cond: Mapping[str, Tensor] | None, batch: int, device: torch.device) -> dict[str, Tensor]:
        return complete_condition(cond, self.condition_spec, batch, device, self.backbone.pad_id)

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor] | None = None, *, ema: bool = True) -> Tensor:
        """``eps_hat(z, logsnr | cond)``; ``cond=None`` (or a missing name) is the null condition."""
        net = self.ema.module if ema else self.backbone
        return self._eps_hat(net, z, logsnr, self._complete(cond, z.shape[0], z.device))

    def _eps_hat(self, net: torch.nn.Module, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        out = net(z, logsnr, cond)
        if self.hparams.prediction == "eps":
            return out
        a, s = signal_noise_scales(logsnr.to(z.dtype))
        shape = (-1,) + (1,) * (z.ndim - 1)
        return a.reshape(shape) * out + s.reshape(shape) * z  # eps from v = a eps - s x

    def batch_conditions(self, conds: Sequence[Mapping[str, Tensor] | None], sizes: Sequence[int]) -> dict[str, Tensor]:
        """Merge conditions for one batched forward (the estimators' condition-batching hook)."""
        return batch_conditions(conds, sizes, self.condition_spec, self.device, self.backbone.pad_id)

    def condition_for(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The model condition of a data batch (captions are tokenized by text backbones)."""
        return self.backbone.prepare_condition(batch)

    # ---- training -----------------------------------------------------------------------------
    def check_data(self, dm: Any) -> None:
        """``ValueError`` if a data module's ``input_shape``, or the conditions of its first
        training example (once set up), are not what this model takes."""
        shape = getattr(dm, "input_shape", None)
        if shape is not None and tuple(shape) != self.input_shape:
            raise ValueError(
                f"data and model disagree on the input shape: the data give {tuple(shape)}, the model takes "
                f"{self.input_shape} ({describe(self.backbone)}; set its size/channels to match the data)"
            )
        examples = getattr(dm, "train_set", None)
        if examples is None or not len(examples):
            return
        self._check_label_values(examples, getattr(dm, "val_set", None))
        from torch.utils.data import default_collate

        batch = default_collate([examples[0]])
        cond = {k: v for k, v in self.condition_for(batch).items() if k in self.condition_spec}
        try:  # the check every training step makes, on one example before training starts
            self._complete(cond, 1, torch.device("cpu"))
        except ValueError as err:
            raise ValueError(f"data and model disagree on the conditions: {err} "
                             f"({describe(self.backbone)}; set its conditions to match the data)") from err

    def _check_label_values(self, *datasets: Any) -> None:
        """Every label of the data sets' ``cond`` columns is below ``n`` for a model label with ``n``
        values (a negative one means "not given", e.g. an unlabelled item). Checked once on whole
        columns, not per step: a label equal to ``n`` would be read as the embedding's "not given"
        row without any error, and a larger one would fail mid-run (e.g. the 10 CIFAR-10 classes in
        a world preset built for 4)."""
        for ds in datasets:
            columns = getattr(ds, "cond", None)
            if not isinstance(columns, Mapping):
                continue
            for name, (kind, size) in self.condition_spec.items():
                col = columns.get(name)
                if kind != "label" or not isinstance(col, Tensor) or not col.numel() or col.is_floating_point():
                    continue
                high = int(col.max())
                if high >= size:
                    low = int(col[col >= 0].min())
                    raise ValueError(
                        f"data and model disagree on the conditions: label {name!r} takes values {low}..{high} in the "
                        f"data, the model has {size} values (0..{size - 1}) ({describe(self.backbone)}; set its "
                        f"conditions to match the data, e.g. --model.backbone.init_args.attributes "
                        f"'{{{name}: {high + 1}, ...}}')")

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.check_data(dm)
        names = getattr(dm, "condition_names", None)
        if names is not None:
            unused = sorted(set(names) - set(self.condition_spec))
            if unused:  # e.g. fine-tuning an unconditional pretrained UNet on labelled data
                log.warning("the model ignores the data's conditions %s (it takes %s)", unused, sorted(self.condition_spec))
        if self.hparams.compile and stage == "fit":
            self.backbone = torch.compile(self.backbone)

    def _generator(self, *key: int | str) -> torch.Generator:
        """A generator for one step's draws: a pure function of the run's seed and ``key``, so
        draws do not depend on what ran before (callbacks, validation, an interruption)."""
        if self._draw_seed is None:
            self._draw_seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed())) & ((1 << 63) - 1)
        return torch.Generator().manual_seed(derive_seed(self._draw_seed, *key))

    def _loss(self, batch: Mapping[str, Any], train: bool, net: torch.nn.Module | None = None,
              gen: torch.Generator | None = None) -> Tensor:
        x0 = batch["x"]
        n = x0.shape[0]
        full = cond = {k: v for k, v in self.condition_for(batch).items() if k in self.condition_spec}
        if train:
            cond = drop_conditions(
                cond, self.condition_spec, self.hparams.cond_dropout, gen,
                word_p=self.hparams.word_dropout, pad_id=self.backbone.pad_id, special_ids=self.backbone.special_ids,
            )
        # drawn on the CPU from ``gen`` and moved: the same numbers on every device
        u = torch.rand(n, generator=gen, dtype=torch.float64).to(x0.device)
        logsnr64 = self.proposal.icdf(u)
        logsnr = logsnr64.to(x0.dtype)
        eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype).to(x0.device)
        z = add_noise(x0, logsnr, eps)
        net = self.backbone if net is None else net
        eps_hat = self._eps_hat(net, z, logsnr, self._complete(cond, n, x0.device))
        if train and self._references is not None:
            eps = self._stable_target(x0, z, logsnr64, cond, full)
        per_sample = (eps - eps_hat).float().square().flatten(1).mean(1)
        if self.hparams.loss == "v_mse":
            return (per_sample * (1 + torch.exp(-logsnr64)).float()).mean()
        if self.hparams.loss == "information":
            width = self.proposal.range.high - self.proposal.range.low
            weight = torch.exp(-self.proposal.log_prob(logsnr64)).float() / width
            return (weight * per_sample).mean()
        return per_sample.mean()

    def _stable_target(self, x0: Tensor, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor], full: Mapping[str, Tensor]) -> Tensor:
        refs, ref_cond = self._references.with_batch(x0, full)
        n = x0.shape[0]
        # a caption with words removed averages over the full captions it can come from (each
        # example among them), weighted by how likely word dropout was to leave it
        logw = condition_log_weights(
            cond, ref_cond, self.condition_spec, (n, refs.shape[0]), x0.device, self.backbone.pad_id,
            word_p=self.hparams.word_dropout, special_ids=self.backbone.special_ids,
        )
        return stable_target(z, logsnr, refs, logw)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        gen = self._generator("train", self.global_step, batch_idx, self.global_rank)
        loss = self._loss(batch, train=True, gen=gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (batch {batch_idx}); "
                "stopping. Lower the learning rate or check the data for NaN/inf."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # here rather than in on_train_batch_end, which runs after the callbacks' (a checkpoint
        # written at this step must hold this step's EMA)
        self.ema.update_parameters(self.backbone)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        # the same noise at every validation (comparable losses), without touching the global RNG
        gen = torch.Generator().manual_seed(derive_seed(0, "val", batch_idx, self.global_rank))
        loss = self._loss(batch, train=False, net=self.ema.module, gen=gen)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["x"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(hp.warmup_steps, max(total - 1, 0))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(total - warmup, 1))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            log.info("training %s", describe(self.backbone))
        readout = getattr(self.backbone, "readout", None)
        examples = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if readout is not None and not bool(readout.ready) and examples is not None and len(examples):
            # the same evenly spaced training images on every process (k-means is deterministic, so
            # every process fits the same mixture): as many as READOUT_POOL_VALUES numbers allow
            n = min(len(examples), max(readout.templates.shape[0], READOUT_POOL_VALUES // readout.templates.shape[1]))
            idx = torch.linspace(0, len(examples) - 1, n).round().long().tolist()
            items = [examples[i] for i in idx]
            x = torch.stack([torch.as_tensor(it["x"]) for it in items])
            labels = {a: torch.tensor([int(it["cond"][a]) for it in items]) for a in readout.label_logits
                      if a in items[0].get("cond", {})}
            readout.init_from(x, labels)
            self.ema.module.readout.load_state_dict(readout.state_dict())

    # ---- what a checkpoint needs beyond the weights, for an exact resume ----------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._generator()  # fixes the draw seed if no step has yet
        state: dict[str, Any] = {"draw_seed": self._draw_seed}
        if self._references is not None and self._references.x is not None:
            state["references"] = {"x": self._references.x.cpu(),
                                   "cond": {k: v.cpu() for k, v in self._references.cond.items()}}
        checkpoint["infodecomp_state"] = state
        if self._trainer is not None:
            checkpoint["infodecomp_run"] = run_identity(self.trainer)
            self._flush_next_batch = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the step's own training metrics reach the loggers after its checkpoint was written:
        # flush them at the next step, so that a killed run has them on disk for its resume
        if getattr(self, "_flush_next_batch", False):
            self._flush_next_batch = False
            for lg in self.trainer.loggers:
                lg.save()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("infodecomp_state") or {}
        self._draw_seed = state.get("draw_seed", self._draw_seed)
        refs = state.get("references")
        if refs is not None and self._references is not None:
            self._references.x = refs["x"]
            self._references.cond = dict(refs["cond"])

    def on_train_start(self) -> None:
        if self._references is not None and self._references.x is not None:  # restored on the CPU
            self._references.x = self._references.x.to(self.device)
            self._references.cond = {k: v.to(self.device) for k, v in self._references.cond.items()}


def run_identity(trainer: pl.Trainer) -> dict[str, Any]:
    """Where a run logs: the CSV/TensorBoard version and the W&B run id, so that a resumed run
    continues in the same directory and W&B run; and how many rows of ``metrics.csv`` were
    logged before this checkpoint (the loggers are flushed first), so that a resumed run keeps
    exactly those."""
    from pytorch_lightning.loggers import CSVLogger

    loggers = []
    for lg in trainer.loggers:
        lg.save()
        entry = {"class": type(lg).__name__, "name": lg.name, "version": lg.version}
        if isinstance(lg, CSVLogger) and trainer.is_global_zero:
            metrics = Path(lg.log_dir) / "metrics.csv"
            entry["rows"] = max(sum(1 for _ in metrics.open()) - 1, 0) if metrics.is_file() else 0
        loggers.append(entry)
    return {"loggers": loggers}


def ema_weights(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The EMA network's weights in a module's state dict, named as the backbone's."""
    prefix = "ema.module."
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file and check that ``DiffusionModule`` wrote it; ``ValueError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an infodecomp DiffusionModule checkpoint (no backbone config in it)")
    return ckpt


def load_module(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> DiffusionModule:
    """Rebuild a :class:`DiffusionModule` from a checkpoint alone (backbone, EMA, hyperparameters).

    Raises ``ValueError`` with one clear sentence for a missing or unreadable file, or for a
    checkpoint that was not written by infodecomp's ``DiffusionModule``.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, map_location)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}  # drop CLI bookkeeping
    hparams.pop("init_from", None)  # the weights are the checkpoint's own
    backbone = build_backbone(hparams.pop("backbone"))
    module = DiffusionModule(backbone, **hparams)
    state = ckpt["state_dict"]
    if ckpt.get("infodecomp_export"):  # EMA weights only (see export_checkpoint): they serve as both
        state = dict(state)
        state.update({"backbone." + k: v for k, v in ema_weights(state).items()})
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match the model it describes: {err}") from err
    module.eval()
    return module


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a small inference checkpoint: hyperparameters and the EMA weights only.

    Optimizer state and the raw training weights are dropped (about a quarter of the size);
    :func:`load_module` reads the result, with the EMA weights as the backbone too.
    """
    src = Path(checkpoint)
    ckpt = read_checkpoint(src)
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")}
    if not state:
        raise ValueError(f"{src} holds no EMA weights to export")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": ckpt["hyper_parameters"], "state_dict": state,
                "global_step": ckpt.get("global_step"), "infodecomp_export": {"source": src.name}}, out)
    return out
