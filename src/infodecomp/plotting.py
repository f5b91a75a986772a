"""Figures (matplotlib, Agg). Every function returns a ``Figure``; callers save or log it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def to_image(x: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[-1, 1]`` -> ``(H, W, 3)`` or ``(H, W)`` in ``[0, 1]`` for imshow."""
    img = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if img.ndim == 3 and img.shape[0] == 1:
        return img[0].numpy()
    if img.ndim == 3:
        return img.permute(1, 2, 0).numpy()
    return img.numpy()


def plot_info_heatmaps(
    images: Tensor,
    maps: Mapping[str, Tensor],
    *,
    oracle_maps: Mapping[str, Tensor] | None = None,
    masks: Tensor | None = None,
    titles: Sequence[str] | None = None,
    unit: str = "nats",
    shared_scale: bool = False,
) -> Figure:
    """Rows of: the image | each variable's information map over it | the oracle's maps.

    Args:
        images: ``(B, C, H, W)`` in ``[-1, 1]``.
        maps: ``{name: (B, H, W)}`` per-pixel information (e.g. CMI per attribute or per word).
        oracle_maps: the same from an exact denoiser, shown after the model's.
        masks: ``(B, H, W)`` object masks, outlined on the image.
        shared_scale: one colour scale for all maps of a row (parts of one total, such as PID
            atoms), instead of one per map.
    """
    names = list(maps)
    cols = [("image", None)] + [(n, maps[n]) for n in names]
    if oracle_maps:
        cols += [(f"oracle {n}", oracle_maps[n]) for n in names if n in oracle_maps]
    rows = images.shape[0]
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.7 * len(cols), 1.7 * rows + 0.4), squeeze=False)
    for i in range(rows):
        row_top = max((float(m[i].abs().max()) for _, m in cols if m is not None), default=0.0)
        for j, (name, m) in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(to_image(images[i]), cmap="gray" if images.shape[1] == 1 else None, interpolation="nearest")
            if m is None:
                if masks is not None:
                    ax.contour(masks[i].float().numpy(), levels=[0.5], colors="white", linewidths=0.8)
                if titles is not None:
                    ax.set_xlabel(titles[i], fontsize=6)
            else:
                heat = m[i].detach().float().cpu().numpy()
                top = max(row_top if shared_scale else abs(heat).max(), 1e-9)
                if heat.min() < -0.01 * top:  # a signed map (e.g. a PID synergy): red +, blue -
                    ax.imshow(heat, cmap="RdBu_r", alpha=0.85, interpolation="nearest", vmin=-top, vmax=top)
                else:
                    ax.imshow(heat, cmap="inferno", alpha=0.75, interpolation="nearest", vmin=0, vmax=top)
                ax.set_xlabel(f"{heat.sum():.2f} {unit}", fontsize=6)
            if i == 0:
                ax.set_title(name, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_word_maps(
    images: Tensor,
    words: Sequence[Sequence[str]],
    maps: Tensor,
    *,
    captions: Sequence[str] | None = None,
    masks: Tensor | None = None,
    label: str = "CMI",
    unit: str = "nats",
) -> Figure:
    """Rows of: the image (caption below) | one map per word, the word and its total below.

    Args:
        images: ``(B, C, H, W)`` in ``[-1, 1]``.
        words: the mapped words of each image.
        maps: ``(B, K, H, W)`` (NaN in unused slots).
        masks: optional ``(B, K, H, W)`` masks outlined on each word's map.
    """
    rows, cols = images.shape[0], 1 + maps.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.35 * cols, 1.45 * rows + 0.3), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.imshow(to_image(images[i]), cmap="gray" if images.shape[1] == 1 else None, interpolation="nearest")
                if captions is not None:
                    ax.set_xlabel(captions[i], fontsize=5)
                continue
            if j - 1 >= len(words[i]):
                ax.axis("off")
                continue
            heat = maps[i, j - 1].detach().float().cpu().nan_to_num().numpy()
            ax.imshow(heat, cmap="inferno", interpolation="nearest", vmin=0, vmax=max(float(heat.max()), 1e-9))
            if masks is not None and masks[i, j - 1].any():
                ax.contour(masks[i, j - 1].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xlabel(f"{words[i][j - 1]}\n{heat.sum():.2f} {unit}", fontsize=6)
    fig.suptitle(f"{label} per word", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mmse_curves(
    logsnr: Tensor, curves: Mapping[str, Tensor], *, se: Mapping[str, Tensor] | None = None,
    reference: Tensor | None = None, title: str = "MMSE vs log-SNR",
) -> Figure:
    """Noise-prediction MMSE per condition, with the Gaussian (linear) reference."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    a = logsnr.double().cpu().numpy()
    for name, c in curves.items():
        y = c.double().cpu().numpy()
        ax.plot(a, y, label=name)
        if se is not None and name in se:
            e = se[name].double().cpu().numpy()
            ax.fill_between(a, y - 2 * e, y + 2 * e, alpha=0.2)
    if reference is not None:
        ax.plot(a, reference.double().cpu().numpy(), "k--", lw=1, label="Gaussian reference")
    ax.set_xlabel("log-SNR α")
    ax.set_ylabel("E‖ε − ε̂‖²")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_information_bars(rows: Sequence[Mapping], *, title: str = "Information per variable") -> Figure:
    """Estimates with 2-SE bars, the oracle's estimate and the exact value, per MI/CMI row."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.5))
    xs = np.arange(len(rows))
    est = [r["estimate"] for r in rows]
    err = [2 * r["se"] for r in rows]
    ax.bar(xs, est, yerr=err, capsize=3, color="#6a5acd", alpha=0.8, label="model")
    oracle = [(i, r["oracle_estimate"]) for i, r in enumerate(rows) if r.get("oracle_estimate") is not None]
    if oracle:
        ax.scatter(*zip(*oracle, strict=True), marker="o", color="orange", zorder=3, label="oracle (same draws)")
    truth = [(i, r["truth"]) for i, r in enumerate(rows) if r.get("truth") is not None]
    if truth:
        ax.scatter(*zip(*truth, strict=True), marker="_", s=400, color="black", zorder=4, label="exact")
    ax.set_xticks(xs, [r["name"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("nats")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_information_density(
    logsnr: Tensor, model: Mapping[str, Tensor], oracle: Mapping[str, Tensor] | None = None,
) -> Figure:
    """``E||eps_hat(z|v) - eps_hat(z)||^2`` against log-SNR per variable: model (solid), oracle (dashed)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    a = logsnr.double().cpu().numpy()
    for name, curve in model.items():
        line, = ax.plot(a, curve.double().cpu().numpy(), label=name)
        if oracle and name in oracle:
            ax.plot(a, oracle[name].double().cpu().numpy(), ls="--", color=line.get_color())
    ax.set_xlabel("log-SNR α")
    ax.set_ylabel("E‖ε̂(z|v) − ε̂(z)‖²")
    ax.set_title("Information density (½∫ = I(x; v))" + ("; dashed: oracle" if oracle else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metric_history(
    steps: Mapping[str, Sequence[float]], values: Mapping[str, Sequence[float]], *,
    truth: Mapping[str, float] | None = None, ylabel: str = "nats", title: str = "During training",
) -> Figure:
    """Curves of logged metrics against the training step, with dashed exact values."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, v in values.items():
        line, = ax.plot(steps[name], v, marker="o", ms=3, label=name)
        if truth and name in truth:
            ax.axhline(truth[name], color=line.get_color(), ls="--", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" (dashed: exact)" if truth else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_estimate_curves(curves: Mapping[str, Mapping[str, Sequence]], titles: Mapping[str, str] | None = None, *,
                         ncol: int = 3) -> Figure:
    """One panel per quantity over training steps: the estimate with its ±1 SE band, the exact value
    (dashed) and the exact oracle on the same draws (dotted), where known; the local twin of the W&B
    charts (``infodecomp.lightning.loggers.curve_chart``). ``curves[name]`` has parallel lists
    ``step``, ``estimate``, ``se``, ``truth``, ``oracle`` (``None`` where unknown)."""
    names = list(curves)
    ncol = max(1, min(ncol, len(names)))
    nrow = int(np.ceil(len(names) / ncol)) if names else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.6 * nrow), squeeze=False)

    def points(c: Mapping[str, Sequence], field: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(s, v) for s, v in zip(c["step"], c.get(field) or [None] * len(c["step"]), strict=True)
                 if s is not None and v is not None]
        return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)

    for ax, name in zip(axes.flat, names, strict=False):
        c = curves[name]
        steps, est = points(c, "estimate")
        _, se = points(c, "se")
        ax.plot(steps, est, marker="o", ms=3, color="C0", label="estimate ± SE")
        if len(se) == len(est):
            ax.fill_between(steps, est - se, est + se, color="C0", alpha=0.25, lw=0)
        for field, style, label in (("truth", dict(color="k", ls="--", lw=1), "exact"),
                                    ("oracle", dict(color="C1", ls=":", marker="s", ms=3), "exact oracle, same draws")):
            xs, ys = points(c, field)
            if len(xs):
                ax.plot(xs, ys, label=label, **style)
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_sample_grid(samples: Tensor, row_titles: Sequence[str] | None = None, ncol: int = 8) -> Figure:
    """``(R * ncol, C, H, W)`` samples in a grid, one row per condition."""
    nrow = int(np.ceil(samples.shape[0] / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.1 * ncol, 1.1 * nrow + 0.2), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < samples.shape[0]:
            ax.imshow(to_image(samples[k]), cmap="gray" if samples.shape[1] == 1 else None, interpolation="nearest")
        if k % ncol == 0 and row_titles is not None and k // ncol < len(row_titles):
            ax.set_ylabel(row_titles[k // ncol], fontsize=6)
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def close(fig: Figure) -> None:
    plt.close(fig)


__all__ = [
    "close", "figure_to_array", "plot_info_heatmaps", "plot_information_bars", "plot_information_density",
    "plot_metric_history",
    "plot_mmse_curves", "plot_sample_grid", "to_image",
]
