"""Denoising networks: ``eps_hat = backbone(z, logsnr, cond)`` with a declared condition spec.

Every backbone records the arguments it was built with (``init_args``) so that a checkpoint
alone rebuilds it, and declares ``condition_spec``: ``{name: (kind, width)}`` with kinds as in
:mod:`infodecomp.models.conditioning`. ``cond`` passed to ``forward`` is always complete (every
name present, "not given" encoded by the kind's null value).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from infodecomp.diffusion.channel import signal_noise_scales
from infodecomp.models.conditioning import Kind
from infodecomp.models.embeddings import FourierLogSNREmbedding, logsnr_to_time
from infodecomp.oracles.gaussian import check_cov, gaussian_eps_hat
from infodecomp.oracles.mixture import isotropic_log_normal, isotropic_residual


class Backbone(nn.Module):
    """Base class: subclasses set ``input_shape``, ``condition_spec`` and ``init_args``."""

    input_shape: tuple[int, ...]
    condition_spec: dict[str, tuple[Kind, int]]
    init_args: dict[str, Any]
    pad_id: int = 0
    special_ids: tuple[int, ...] = ()
    #: what the output is read as, ``"eps"`` or ``"v"``: ``DiffusionModule`` sets it to its
    #: ``prediction`` (a backbone that adds a prediction of its own, as :class:`LabelledUNet`'s
    #: mixture readout does, needs to know which)
    prediction: str = "eps"

    @property
    def config(self) -> dict[str, Any]:
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.init_args)}

    def prepare_condition(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The model condition for a data batch (labels/vectors as given; text backbones tokenize)."""
        return dict(batch.get("cond") or {})


def build_backbone(config: Mapping[str, Any]) -> Backbone:
    """Rebuild a backbone from its ``config`` (``{"class_path": ..., "init_args": ...}``)."""
    try:
        module_name, _, cls_name = config["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (KeyError, ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot rebuild backbone from {config!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise ValueError(f"{config['class_path']} is not an infodecomp Backbone")
    return cls(**config.get("init_args", {}))


# ---------------------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, emb: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        out = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(e)
        return h + self.fc2(nn.functional.silu(out))


class MLPBackbone(Backbone):
    """Residual MLP for vector data, conditioned on vectors (and/or labels) and log-SNR.

    Args:
        dim: dimension of ``x``.
        vector_conditions: ``{name: width}`` of continuous conditions (e.g. ``{"y": 5}``).
        label_conditions: ``{name: number of values}`` of discrete conditions.
        hidden, depth, embed: width, number of residual blocks, embedding size.
    """

    def __init__(
        self,
        dim: int,
        vector_conditions: Mapping[str, int] | None = None,
        label_conditions: Mapping[str, int] | None = None,
        hidden: int = 256,
        depth: int = 4,
        embed: int = 128,
    ) -> None:
        super().__init__()
        vector_conditions = dict(vector_conditions or {})
        label_conditions = dict(label_conditions or {})
        self.init_args = {"dim": dim, "vector_conditions": vector_conditions, "label_conditions": label_conditions,
                          "hidden": hidden, "depth": depth, "embed": embed}
        self.input_shape = (dim,)
        self.condition_spec = {k: ("vector", w) for k, w in vector_conditions.items()}
        self.condition_spec.update({k: ("label", n) for k, n in label_conditions.items()})
        self.time = FourierLogSNREmbedding(embed)
        self.vec_proj = nn.ModuleDict({k: nn.Linear(w, embed) for k, w in vector_conditions.items()})
        self.vec_null = nn.ParameterDict({k: nn.Parameter(torch.zeros(embed)) for k in vector_conditions})
        self.labels = nn.ModuleDict({k: nn.Embedding(n + 1, embed) for k, n in label_conditions.items()})
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, embed) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        e = self.time(logsnr)  # (B, embed)
        for name, proj in self.vec_proj.items():
            v = cond[name]
            missing = torch.isnan(v).any(dim=1, keepdim=True)  # (B, 1)
            e = e + torch.where(missing, self.vec_null[name].expand_as(e), proj(torch.nan_to_num(v)))
        for name, table in self.labels.items():
            lab = cond[name]
            e = e + table(torch.where(lab < 0, torch.full_like(lab, table.num_embeddings - 1), lab))
        h = self.inp(z.reshape(z.shape[0], -1))
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).reshape(z.shape)


class GaussianResidualMLP(MLPBackbone):
    """:class:`MLPBackbone` that learns what the Gaussian with the data's moments gets wrong.

    ``eps_hat(z | given) = eps_G(z | given) + mlp(z, logsnr, cond)``, where ``eps_G`` is the exact
    denoiser of the Gaussian with the joint mean and covariance of ``x`` and the vector
    conditions (``joint_mean``, ``joint_cov``; ``x`` first, then the conditions in the order of
    ``vector_conditions``), conditioned on whichever conditions each row is given. The MLP's
    output starts at zero, so training starts from the best linear-Gaussian denoiser and the
    network spends itself on the non-Gaussian rest. In many dimensions that matters: every
    coordinate the network must learn from scratch adds its error to an information estimate.
    """

    def __init__(self, dim: int, vector_conditions: Mapping[str, int], joint_mean: Sequence[float],
                 joint_cov: Sequence[Sequence[float]], hidden: int = 256, depth: int = 4, embed: int = 128) -> None:
        super().__init__(dim, vector_conditions=vector_conditions, hidden=hidden, depth=depth, embed=embed)
        total = dim + sum(self.vec_proj[k].in_features for k in self.vec_proj)
        cov, mean = check_cov(torch.as_tensor(joint_cov)), torch.as_tensor(joint_mean, dtype=torch.float64)
        if cov.shape != (total, total) or mean.shape != (total,):
            raise ValueError(f"joint_mean and joint_cov must cover x and the conditions ({total} entries), got "
                             f"{tuple(mean.shape)} and {tuple(cov.shape)}")
        self.init_args.update(joint_mean=mean.tolist(), joint_cov=cov.tolist())
        del self.init_args["label_conditions"]
        # float64 on the CPU, not buffers: constants rebuilt from ``init_args``, which the EMA copy
        # need not average every step; :meth:`_conditional` keeps what it derives per dtype/device
        self.joint_mean, self.joint_cov = mean, cov
        self._blocks: dict[str, slice] = {}
        start = dim
        for name, proj in self.vec_proj.items():
            self._blocks[name] = slice(start, start + proj.in_features)
            start += proj.in_features
        self._given: dict[tuple[str, ...], tuple[Tensor, ...]] = {}

    def _conditional(self, given: tuple[str, ...], like: Tensor) -> tuple[Tensor, ...]:
        """Regression ``B`` of ``x`` on the given conditions, their means, and the eigen-pairs of
        the conditional covariance (solved in float64 once per set of given conditions, kept in
        ``like``'s dtype and device)."""
        key = (given, like.dtype, like.device)
        if key not in self._given:
            d = self.input_shape[0]
            idx = torch.cat([torch.arange(self._blocks[k].start, self._blocks[k].stop) for k in given]) if given \
                else torch.zeros(0, dtype=torch.long)
            cov, mean = self.joint_cov, self.joint_mean
            s_xx, s_xc, s_cc = cov[:d, :d], cov[:d][:, idx], cov[idx][:, idx]
            reg = torch.linalg.solve(s_cc, s_xc.T).T if given else s_xc  # (d, dc)
            lam, vec = torch.linalg.eigh(s_xx - reg @ s_xc.T)
            self._given[key] = tuple(t.to(dtype=like.dtype, device=like.device)
                                     for t in (reg, mean[idx], mean[:d], lam.clamp_min(1e-6), vec))
        return self._given[key]

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        names = list(self._blocks)
        present = torch.stack([~torch.isnan(cond[k]).any(dim=1) for k in names], dim=1)
        base = torch.empty_like(z)
        for pattern in torch.unique(present, dim=0).tolist():
            rows = (present == torch.tensor(pattern, device=z.device)).all(dim=1)
            given = tuple(k for k, p in zip(names, pattern, strict=True) if p)
            reg, c_mean, x_mean, lam, vec = self._conditional(given, z)
            mean = x_mean.expand(int(rows.sum()), -1)
            if given:
                mean = mean + (torch.cat([cond[k][rows] for k in given], dim=1) - c_mean) @ reg.T
            base[rows] = gaussian_eps_hat(z[rows], logsnr[rows].to(z.dtype), mean, lam, vec)
        return base + super().forward(z, logsnr, cond)


def _down_up_blocks(levels: int, attention: bool, cross: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if cross:
        # cross-attention below the input resolution only (and in the mid block): at full
        # resolution its self-attention over H*W tokens dominates the cost on a CPU
        plain = 1 if levels > 1 else 0
        down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * (levels - plain)
        up = ("CrossAttnUpBlock2D",) * (levels - plain) + ("UpBlock2D",) * plain
    elif attention:
        down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
        up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    else:
        down, up = ("DownBlock2D",) * levels, ("UpBlock2D",) * levels
    return down, up


def coordinate_channels(z: Tensor) -> Tensor:
    """Two channels holding each pixel's row and column in ``[-1, 1]``, shaped like ``z[:, :2]``.

    Convolutions are translation-equivariant, so a UNet given only a global condition embedding
    has no easy way to put an object in a particular place from pure noise; coordinate channels
    (CoordConv, Liu et al. 2018) give it one.
    """
    b, _, h, w = z.shape
    rows = torch.linspace(-1, 1, h, device=z.device, dtype=z.dtype)[:, None].expand(h, w)
    cols = torch.linspace(-1, 1, w, device=z.device, dtype=z.dtype)[None, :].expand(h, w)
    return torch.stack([rows, cols])[None].expand(b, 2, h, w)


class SNRGate(nn.Module):
    """Per-channel gates in ``(0, 1)`` for ``n`` condition embeddings, learned as a function of log-SNR.

    Where the noise is small the image already determines its labels, so the exact conditional
    and unconditional denoisers agree; a network whose label embedding shifts every block can
    only approximate that agreement, and its leftover label-dependent output is read as
    information by the estimators. The gate gives it a direct way to switch a label off at the
    noise levels where the label does not help. It starts open (about 0.95).

    Nothing rewards closing a gate where a label is merely useless, so on its own the gate can
    stay ajar at high SNR, where training rarely looks. ``fade`` adds a learned, decreasing
    envelope ``sigmoid(-rate * (alpha - fade))`` per channel (starting at ``rate = 1.5``): it is
    the shape of what a label can add, since ``I(x; y | z_alpha) = H(y | z_alpha) - H(y | x)``
    never grows with SNR, and it reaches zero, so conditional and unconditional outputs meet.
    """

    def __init__(self, n: int, dim: int, hidden: int = 64, fade: float | None = None) -> None:
        super().__init__()
        self.n, self.dim = n, dim
        self.embed = FourierLogSNREmbedding(hidden)
        self.out = nn.Linear(hidden, n * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 3.0)
        if fade is not None:
            self.fade = nn.Parameter(torch.full((n, dim), float(fade)))
            self.rate = nn.Parameter(torch.full((n, dim), math.log(math.expm1(1.5))))  # softplus -> 1.5
        else:
            self.fade = self.rate = None

    def forward(self, logsnr: Tensor) -> Tensor:
        """``(B, n, dim)`` gates."""
        h = nn.functional.silu(self.embed(logsnr))
        gate = torch.sigmoid(self.out(h)).view(-1, self.n, self.dim)
        if self.fade is not None:
            rate = nn.functional.softplus(self.rate)
            gate = gate * torch.sigmoid(-rate * (logsnr.to(gate.dtype).view(-1, 1, 1) - self.fade))
        return gate


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2`` for rows ``a`` (``(n, d)``) and ``b`` (``(k, d)``), as ``(n, k)``."""
    return ((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]).clamp_min(0)


def _same_mean_groups(m: Tensor, counts: Tensor, var: Tensor, z: float = 6.0, split: float = 16.0) -> Tensor:
    """Group ids of the cluster means ``m`` (``(k, d)``, of ``counts`` rows each, pixel variance
    ``var`` within a cluster) that are one cluster split by k-means. Two means of the same
    distribution differ by chance by ``var (1/n_i + 1/n_j) chi^2_d``, and by design, where k-means
    cuts one Gaussian in two, by about ``1.6`` of its standard deviations (``2 sqrt(2 / pi)``):
    a pair closer than ``var (split + (1/n_i + 1/n_j)(d + z sqrt(2 d)))``, i.e. than ``sqrt(split)
    = 4`` noise SDs beyond chance, is merged, and linked pairs transitively."""
    k, d = m.shape
    inv = 1.0 / counts.clamp_min(1)
    dist = _squared_distances(m, m)
    limit = var * (split + (inv[:, None] + inv[None]) * (d + z * math.sqrt(2 * d)))
    same = (dist < limit) & (counts[:, None] > 0) & (counts[None] > 0)
    group = torch.arange(k, device=m.device)
    while True:  # every id becomes the smallest id it is linked to
        new = torch.where(same, group[None], k).min(1).values.minimum(group)
        if torch.equal(new, group):
            break
        group = new
    return torch.unique(group, return_inverse=True)[1]


class MixtureReadout(nn.Module):
    """A global read of the whole noisy image: the posterior of ``x`` given ``z`` (and any labels)
    under a mixture of ``k`` isotropic Gaussians fitted to the training images, with templates
    ``m_k``, one shared pixel variance ``v`` and, per label, ``p(label | k)``.

    This is the exact denoiser of such a mixture (:class:`~infodecomp.oracles.GaussianMixtureOracle`
    computes it with the same functions): the responsibilities weigh ``N(z; a m_k, (a^2 v + s^2) I)``
    by the given labels' ``p(y | k)``, as the exact posterior reweights components by a noisy label.
    Every template sees every pixel, which a convolution's receptive field does not: telling which
    of a few dozen images a noisy one is, from evidence spread over all of it, is one matrix product
    here, where a small UNet learns it slowly and, until it has, reads its labels as information
    they do not carry (docs/trust.md, "What ten minutes buy"). :class:`LabelledUNet` adds this
    prediction to its own output and gives it the posterior mean as input, so the UNet learns what
    the mixture misses.

    Before the first step the training module fits the mixture to training images and their
    labels by k-means (:meth:`init_from`); it stays fixed after that (its parameters do not
    require gradients). Trained on by the denoising loss from that fit, its label probabilities
    drifted sharper and its estimates 4-12% above the exact oracle's on the natural-image world,
    where the fit alone was within the evaluation's noise (docs/natural.md).
    """

    #: rounds of k-means that fit the mixture to training images (:meth:`init_from`)
    KMEANS_ITERS = 5

    def __init__(self, shape: Sequence[int], k: int, attributes: Mapping[str, int] | None = None) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"a mixture readout needs at least one template, got {k}")
        d = math.prod(shape)
        self.shape = tuple(shape)
        self.templates = nn.Parameter(torch.randn(k, d) / math.sqrt(d))
        self.log_var = nn.Parameter(torch.tensor(math.log(0.01)))
        self.bias = nn.Parameter(torch.zeros(k))
        self.label_logits = nn.ParameterDict({a: nn.Parameter(torch.zeros(k, n)) for a, n in (attributes or {}).items()})
        self.requires_grad_(False)  # fitted by init_from, then fixed (docs/natural.md: trained, it drifted high)
        self.register_buffer("ready", torch.tensor(0.0))  # 1 once init_from has run (a float: EMA averages buffers)

    @torch.no_grad()
    def init_from(self, x: Tensor, labels: Mapping[str, Tensor] | None = None, iters: int | None = None) -> None:
        """Fit the mixture to the rows of ``x`` (``(n, *shape)``) and their labels (``{attribute:
        (n,) long}``): ``k`` evenly spaced rows start ``iters`` rounds of k-means (default
        :data:`KMEANS_ITERS`); each template is then its cluster's mean, the pixel variance the
        variance within clusters, a template's bias the log of its cluster's share and ``p(label | k)``
        its rows' label frequencies (half a count added to each value).

        Clusters that no test tells apart (one image's noisy copies split by k-means' chance, as
        where ``k`` exceeds the distinct images) are merged, their templates made identical, so that
        the mixture does not tell them apart later by the noise their means kept: it would pick
        one at high SNR and read its label frequencies, noisy estimates of the same ones, as
        information (on the natural-image world, +15% to +23% in four of the six MIs and CMIs
        before any step; docs/natural.md).
        """
        flat = x.reshape(x.shape[0], -1).to(self.templates)
        if flat.shape[1] != self.templates.shape[1]:
            raise ValueError(f"init_from needs images of shape {self.shape}, got {tuple(x.shape[1:])}")
        k, n = self.templates.shape[0], flat.shape[0]
        iters = self.KMEANS_ITERS if iters is None else iters
        m = flat[torch.linspace(0, n - 1, k, device=flat.device).round().long()].clone()  # repeats when n < k
        for _ in range(max(iters, 0) + 1):
            assign = _squared_distances(flat, m).argmin(1)
            counts = torch.bincount(assign, minlength=k).to(flat)
            sums = torch.zeros_like(m).index_add_(0, assign, flat)
            m = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], m)
        var = ((flat - m[assign]) ** 2).mean().clamp_min(1e-8)
        group = _same_mean_groups(m, counts, var)
        ngroups = int(group.max()) + 1
        gcounts = torch.zeros(ngroups, dtype=flat.dtype, device=flat.device).index_add_(0, group, counts)
        gsums = torch.zeros(ngroups, m.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, group, sums)
        size = torch.bincount(group, minlength=ngroups).to(flat)
        m = torch.where(gcounts[group, None] > 0, (gsums / gcounts.clamp_min(1)[:, None])[group], m)
        gassign = group[assign]
        self.templates.copy_(m)
        self.log_var.fill_(math.log(((flat - m[assign]) ** 2).mean().clamp_min(1e-8).item()))  # about the merged means
        # a template that took no row (k-means' leftover, or a repeated row where n < k) weighs next to nothing
        self.bias.copy_(torch.log(gcounts[group].clamp_min(1e-3) / n / size[group]))
        for name, table in self.label_logits.items():
            if labels is not None and name in labels:
                lab = labels[name].to(flat.device).long()
                given = lab >= 0
                hist = torch.zeros(ngroups, table.shape[1], dtype=flat.dtype, device=flat.device)
                hist.index_put_((gassign[given], lab[given]), torch.ones_like(lab[given], dtype=flat.dtype), accumulate=True)
                hist += 0.5
                table.copy_(torch.log(hist / hist.sum(1, keepdim=True))[group])
        self.ready.fill_(1.0)

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(E[x | z, labels], E[eps | z, labels])``, each shaped like ``z`` (labels ``-1``: not given)."""
        m, v = self.templates, self.log_var.exp()
        a, s = (t.view(-1) for t in signal_noise_scales(logsnr.to(m.dtype)))
        flat = z.flatten(1).to(m.dtype)
        log_n, var = isotropic_log_normal(flat, a, s, m, v.expand(m.shape[0]))
        logits = log_n + self.bias
        for name, table in self.label_logits.items():
            lab = (cond or {}).get(name)
            if lab is not None:
                log_p = torch.log_softmax(table, 1)[:, lab.clamp_min(0)].T  # (B, k)
                logits = logits + torch.where((lab >= 0)[:, None], log_p, 0.0)
        resp = torch.softmax(logits, dim=1)
        resid = isotropic_residual(flat, a, resp, var, m)
        xhat = resp @ m + a[:, None] * v * resid
        return xhat.view(z.shape).to(z.dtype), (s[:, None] * resid).view(z.shape).to(z.dtype)


class LabelledUNet(Backbone):
    """diffusers ``UNet2DModel`` conditioned on discrete attributes.

    Each attribute has an embedding table with one extra row for "not given"; the sum of the
    attribute embeddings enters the UNet as its class embedding (``class_embed_type="identity"``).

    Args:
        image_size, channels: the image shape ``(channels, image_size, image_size)``.
        attributes: ``{name: number of values}``, e.g. ``{"shape": 3, "colour": 3, "position": 4}``.
        block_out_channels: channels per resolution level.
        layers_per_block: ResNet layers per level.
        attention: use self-attention at the lowest resolution.
        coordinates: append pixel-coordinate channels to the input (see :func:`coordinate_channels`).
        snr_gate: multiply each attribute's embedding by a learned gate in ``(0, 1)`` per
            embedding channel, a function of log-SNR (see :class:`SNRGate`).
        gate_fade: give the gate a learned decreasing envelope, at half height at this log-SNR
            to start with (see :class:`SNRGate`); ``None`` for none.
        joint_embedding: also learn one vector per combination of attribute values (each value
            or "not given"), added to the sum and zero at the start (the mean of the attribute
            gates scales it). A sum of per-attribute embeddings makes combinations hard to learn:
            a colour set by the XOR of two labels was not learned at all in 1000 steps without it.
        readout: templates of a :class:`MixtureReadout` (0: none). The UNet then predicts what is
            left of the noise after the mixture's exact-form posterior, and takes that posterior's
            mean as input channels; its output layer starts at zero. The mixture is fitted to the
            training images before the first step and then fixed. The default demo uses 128 (a
            ``[16, 32]`` UNet with it is within 1.1% of exact on the demo's data, where the
            ``[32, 64]`` UNet alone needed 8000 steps for 7.4%: docs/trust.md), the natural-image
            preset 256 (within 5.6% of exact on two seeds, the UNet alone up to 24% high:
            docs/natural.md).
    """

    def __init__(
        self,
        image_size: int = 16,
        channels: int = 3,
        attributes: Mapping[str, int] | None = None,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        attention: bool = False,
        norm_num_groups: int = 8,
        coordinates: bool = True,
        snr_gate: bool = False,
        gate_fade: float | None = None,
        joint_embedding: bool = False,
        readout: int = 0,
    ) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        attributes = dict(attributes or {})
        block_out_channels = tuple(int(c) for c in block_out_channels)
        self.init_args = {"image_size": image_size, "channels": channels, "attributes": attributes,
                          "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
                          "attention": attention, "norm_num_groups": norm_num_groups, "coordinates": coordinates,
                          "snr_gate": snr_gate, "gate_fade": gate_fade, "joint_embedding": joint_embedding,
                          "readout": readout}
        self.input_shape = (channels, image_size, image_size)
        self.condition_spec = {k: ("label", n) for k, n in attributes.items()}
        self.coordinates = coordinates
        if readout < 0:
            raise ValueError(f"readout must be >= 0 templates (0: none), got {readout}")
        self.readout = MixtureReadout(self.input_shape, readout, attributes) if readout else None
        down, up = _down_up_blocks(len(block_out_channels), attention, cross=False)
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels * (1 + bool(readout)) + 2 * coordinates, out_channels=channels,
            block_out_channels=block_out_channels, down_block_types=down, up_block_types=up,
            layers_per_block=layers_per_block, class_embed_type="identity" if attributes else None,
            norm_num_groups=norm_num_groups,
        )
        if self.readout is not None:  # the UNet starts as nothing on top of the mixture's prediction
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        temb = block_out_channels[0] * 4
        self.labels = nn.ModuleDict({k: nn.Embedding(n + 1, temb) for k, n in attributes.items()})
        for table in self.labels.values():
            nn.init.normal_(table.weight, std=0.02)
        self.gate = SNRGate(len(self.labels), temb, fade=gate_fade) if snr_gate and attributes else None
        self.joint = None
        if joint_embedding and len(attributes) > 1:
            combos = math.prod(n + 1 for n in attributes.values())
            if combos > 65_536:
                raise ValueError(f"joint_embedding needs one vector per combination of attribute values; these "
                                 f"attributes have {combos} (at most 65536)")
            self.joint = nn.Embedding(combos, temb)
            nn.init.zeros_(self.joint.weight)

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        class_emb = None
        gates = self.gate(logsnr) if self.gate is not None else None
        combo = None
        for i, (name, table) in enumerate(self.labels.items()):
            lab = cond[name]
            idx = torch.where(lab < 0, torch.full_like(lab, table.num_embeddings - 1), lab)
            combo = idx if combo is None else combo * table.num_embeddings + idx
            e = table(idx)
            if gates is not None:
                e = e * gates[:, i].to(e.dtype)
            class_emb = e if class_emb is None else class_emb + e
        if self.joint is not None:
            j = self.joint(combo)
            class_emb = class_emb + (j * gates.mean(dim=1).to(j.dtype) if gates is not None else j)
        t = logsnr_to_time(logsnr).to(z.dtype)
        parts = [z]
        if self.readout is not None:
            xhat, eps = self.readout(z, logsnr, cond)
            parts.append(xhat)
        if self.coordinates:
            parts.append(coordinate_channels(z))
        out = self.unet(torch.cat(parts, dim=1) if len(parts) > 1 else z, t, class_labels=class_emb).sample
        if self.readout is None:
            return out
        if self.prediction == "eps":
            return out + eps
        a, s = (v.view(-1, 1, 1, 1).to(z.dtype) for v in signal_noise_scales(logsnr))
        return out + a * eps - s * xhat  # v = a eps - s x


class WordTokenizer:
    """A word-level tokenizer built from a caption vocabulary (no download).

    Wraps ``tokenizers``' ``WordLevel`` model in a transformers ``PreTrainedTokenizerFast`` so it
    saves and loads with ``save_pretrained`` / ``from_pretrained``. Ids: ``[PAD]=0``, ``[UNK]=1``,
    ``[BOS]=2``, ``[EOS]=3``, then the vocabulary in the given order.
    """

    SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")

    def __init__(self, vocabulary: Sequence[str], max_words: int = 12) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        words = [w for w in dict.fromkeys(vocabulary) if w not in self.SPECIALS]
        vocab = {tok: i for i, tok in enumerate(list(self.SPECIALS) + words)}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        core.pre_tokenizer = pre_tokenizers.Whitespace()
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        )
        self.vocabulary = words
        self.max_words = max_words

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIALS) + len(self.vocabulary)

    def encode(self, captions: Sequence[str], *, strict: bool = True) -> Tensor:
        """Word ids ``(B, max_words)`` (no BOS/EOS), padded with 0.

        Raises ``ValueError`` for unknown words (``strict``) or captions longer than ``max_words``.
        """
        rows = []
        for caption in captions:
            ids = self.tokenizer(caption, add_special_tokens=False)["input_ids"]
            if strict and 1 in ids:
                unknown = [w for w in caption.split() if w not in self.vocabulary]
                raise ValueError(f"caption {caption!r} has words outside the model's vocabulary: {unknown}")
            if len(ids) > self.max_words:
                raise ValueError(f"caption {caption!r} has {len(ids)} words; this model takes at most {self.max_words}")
            rows.append(ids + [0] * (self.max_words - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.max_words)

    def decode(self, ids: Tensor) -> list[str]:
        return [self.tokenizer.decode([i for i in row.tolist() if i >= len(self.SPECIALS)]) for row in ids]


class TextConditionedUNet(Backbone):
    """diffusers ``UNet2DConditionModel`` with a small transformers ``CLIPTextModel`` encoder.

    The text encoder is trained from scratch together with the UNet on a word-level vocabulary.
    Condition: ``{"text": (B, max_words)}`` word ids; the empty prompt (all padding) is the null.

    Args:
        image_size, channels: image shape.
        vocabulary: the words that captions may use.
        max_words: longest caption in words.
        text_dim, text_layers, text_heads: text encoder size.
        block_out_channels, layers_per_block, attention_head_dim: UNet size.
        coordinates: append pixel-coordinate channels to the input.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        vocabulary: Sequence[str] = (),
        max_words: int = 12,
        text_dim: int = 64,
        text_layers: int = 2,
        text_heads: int = 4,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        attention_head_dim: int = 8,
        norm_num_groups: int = 8,
        coordinates: bool = True,
    ) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        if not vocabulary:
            raise ValueError("TextConditionedUNet needs a non-empty vocabulary")
        block_out_channels = tuple(int(c) for c in block_out_channels)
        self.init_args = {"image_size": image_size, "channels": channels, "vocabulary": list(vocabulary),
                          "max_words": max_words, "text_dim": text_dim, "text_layers": text_layers,
                          "text_heads": text_heads, "block_out_channels": list(block_out_channels),
                          "layers_per_block": layers_per_block, "attention_head_dim": attention_head_dim,
                          "norm_num_groups": norm_num_groups, "coordinates": coordinates}
        self.coordinates = coordinates
        self.words = WordTokenizer(vocabulary, max_words)
        self.input_shape = (channels, image_size, image_size)
        self.condition_spec = {"text": ("text", max_words)}
        self.special_ids = (1, 2, 3)
        self.text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=self.words.vocab_size, hidden_size=text_dim, intermediate_size=2 * text_dim,
            num_hidden_layers=text_layers, num_attention_heads=text_heads, max_position_embeddings=max_words + 2,
            pad_token_id=0, bos_token_id=2, eos_token_id=3,
        ))
        down, up = _down_up_blocks(len(block_out_channels), attention=False, cross=True)
        self.unet = UNet2DConditionModel(
            sample_size=image_size, in_channels=channels + 2 * coordinates, out_channels=channels,
            block_out_channels=block_out_channels, down_block_types=down, up_block_types=up,
            layers_per_block=layers_per_block, cross_attention_dim=text_dim,
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
        )

    def prepare_condition(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if "captions" in batch:
            return {"text": self.words.encode(batch["captions"]).to(batch["x"].device)}
        return dict(batch.get("cond") or {})

    def encode_text(self, words: Tensor) -> Tensor:
        """Word ids ``(B, L)`` -> encoder states ``(B, L + 2, text_dim)`` with BOS/EOS added."""
        batch, width = words.shape
        lengths = (words != 0).sum(1)
        ids = torch.zeros(batch, width + 2, dtype=torch.long, device=words.device)
        ids[:, 0] = 2
        ids[:, 1 : width + 1] = words
        ids[torch.arange(batch, device=words.device), lengths + 1] = 3
        mask = (torch.arange(width + 2, device=words.device)[None, :] <= lengths[:, None] + 1).long()
        return self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def forward(self, z: Tensor, logsnr: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        # estimators repeat each prompt over many noise draws: encode each distinct prompt once
        unique, inverse = torch.unique(cond["text"], dim=0, return_inverse=True)
        states = self.encode_text(unique)[inverse].to(z.dtype)
        t = logsnr_to_time(logsnr).to(z.dtype)
        inp = torch.cat([z, coordinate_channels(z)], dim=1) if self.coordinates else z
        return self.unet(inp, t, encoder_hidden_states=states).sample


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(backbone: Backbone) -> str:
    return f"{type(backbone).__name__} ({count_parameters(backbone) / 1e6:.2f} M parameters, input {backbone.input_shape})"


__all__ = [
    "GaussianResidualMLP",
    "Backbone", "LabelledUNet", "MLPBackbone", "TextConditionedUNet", "WordTokenizer", "build_backbone",
    "count_parameters", "describe",
]
