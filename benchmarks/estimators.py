"""Estimator benchmark: accuracy on exact oracles and efficiency against the paper's sampler.

Two parts, both against ground truth:

* ``cases``: MI, CMI and NLL on Gaussian and Gaussian-mixture oracles (truth in closed form
  or by Monte Carlo with exact posteriors), for the orthogonal and standard estimators.
* ``efficiency``: on a 1024-dimensional Gaussian with an image-like spectrum (a 32x32
  "image" whose covariance is diagonal in the 2-D DCT basis with variance ``1/(1 + |f|^2)``)
  observed as ``y = x + noise``, the RMSE of the pointwise orthogonal MI estimate and of the
  per-pixel maps at equal NFE for the sampler of the paper's released code (i.i.d. truncated
  logistic, loc=1, scale=2, clip=3, one noise draw per log-SNR) and for infodecomp's default
  (stratified log-SNRs, antithetic noise, range [-12, 12]). Truth is the exact pointwise
  orthogonal information over the whole log-SNR axis (closed form in the noise, Gauss-Legendre
  in log-SNR), so truncation bias counts against a sampler.

Usage:
    python benchmarks/estimators.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from infodecomp import LogSNRSampler, conditional_mutual_information, mutual_information, nll
from infodecomp.diffusion import fit_logistic_to_spectrum
from infodecomp.estimators import Term, integrate
from infodecomp.estimators.control import fit_noise_control, principal_directions
from infodecomp.oracles import (
    GaussianMixtureOracle,
    GaussianOracle,
    JointGaussian,
    exact_orthogonal_density,
)
from infodecomp.oracles.gaussian import _gauss_legendre
from infodecomp.tasks import get_task

# ---------------------------------------------------------------------------------------------
# accuracy cases


def accuracy_cases(quick: bool) -> list[dict]:
    n = 2000 if quick else 8000
    n_draws = 32
    rows = []

    def add(name, truth, est, estimator):
        rows.append({
            "name": name, "estimator": estimator, "truth": float(truth), "estimate": est.item(),
            "se": float(est.se), "nfe": est.nfe, "abs_error": abs(est.item() - float(truth)),
            "logsnr_range": [est.logsnr_range.low, est.logsnr_range.high],
        })

    gaussians = {
        "mi/normal-1v1-0.75": JointGaussian.bivariate(0.75),
        "mi/dense-5-5-0.5": JointGaussian.dense(5, 5, 0.5),
        "mi/paired-25-25-2-0.8": JointGaussian.paired(25, 25, 2, 0.8),
    }
    for name, g in gaussians.items():
        s = g.sample(n, seed=1)
        for estimator in ("orthogonal", "standard"):
            est = mutual_information(g.denoiser("x"), s["x"], {"y": s["y"]}, estimator=estimator, n_draws=n_draws)
            add(name, g.mutual_information("x", "y"), est, estimator)
    task = get_task("cmi-gaussian-2-2-2-1.0")
    g = task.joint
    s = g.sample(n, seed=1)
    for estimator in ("orthogonal", "standard"):
        est = conditional_mutual_information(
            g.denoiser("x"), s["x"], {"y": s["y"], "c": s["c"]}, {"c": s["c"]}, estimator=estimator, n_draws=n_draws
        )
        add(f"cmi/{task.id}", g.mutual_information("x", "y", ("c",)), est, estimator)
    g = JointGaussian.dense(5, 5, 0.5)
    s = g.sample(n, seed=2)
    add("nll/dense-5", -g.log_prob("x", s["x"]).mean().item(), nll(g.denoiser("x"), s["x"], n_draws=64), "nll")
    mix = GaussianMixtureOracle.overlapping(shape=(1, 8, 8))
    truth = mix.mutual_information("label", n=20000 if quick else 100000, seed=1)
    x, labels = mix.sample(n, seed=2)
    for estimator in ("orthogonal", "standard"):
        add("mi/mixture-10x64", truth.item(), mutual_information(mix, x, labels["label"], estimator=estimator, n_draws=n_draws), estimator)
    return rows


# ---------------------------------------------------------------------------------------------
# efficiency on a 1024-dimensional image-like Gaussian


def dct_basis(n: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II basis for ``n x n`` images, eigenvectors as columns ``(n^2, n^2)``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return torch.kron(c, c).T


class ImageLikeGaussian:
    """``x ~ N(0, V diag(lam) V^T)`` on 32x32 images, ``y = x + N(0, tau I)``; exact denoisers."""

    def __init__(self, side: int = 32, tau: float = 1.0) -> None:
        self.side, self.tau = side, tau
        f = torch.arange(side, dtype=torch.float64)
        freq2 = (f[:, None] ** 2 + f[None, :] ** 2).flatten()
        lam = 1.0 / (1.0 + freq2)
        self.lam = lam * lam.numel() / lam.sum()  # unit mean pixel variance
        self.vec = dct_basis(side)
        self.post = self.lam * tau / (self.lam + tau)
        shape = (1, side, side)
        d = side * side
        self.marginal = GaussianOracle(torch.zeros(d), self.vec @ torch.diag(self.lam) @ self.vec.T, shape)
        self.posterior = GaussianOracle(torch.zeros(d), self.vec @ torch.diag(self.post) @ self.vec.T, shape)

    def posterior_mean(self, y: torch.Tensor) -> torch.Tensor:
        flat = y.reshape(y.shape[0], -1).to(torch.float64)
        return ((flat @ self.vec) * (self.lam / (self.lam + self.tau))) @ self.vec.T

    def __call__(self, z, logsnr, cond=None):
        if cond is None:
            return self.marginal(z, logsnr)
        return self.posterior.eps_hat(z, logsnr, self.posterior_mean(cond))

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.marginal.sample(n, seed=seed)
        gen = torch.Generator().manual_seed(seed + 1)
        y = x + math.sqrt(self.tau) * torch.randn(x.shape, generator=gen)
        return x, y

    def exact(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact pointwise orthogonal information ``(B,)`` and per-pixel maps ``(B, side, side)``."""
        nodes, weights = _gauss_legendre(600, -40.0, 40.0)
        zeros = torch.zeros(x.shape[0], x[0].numel(), dtype=torch.float64)
        maps = torch.zeros(x.shape[0], x[0].numel(), dtype=torch.float64)
        mean_c = self.posterior_mean(y)
        flat = x.reshape(x.shape[0], -1)
        for start in range(0, len(nodes), 50):
            sl = slice(start, start + 50)
            dens = exact_orthogonal_density(
                self.vec, self.lam, zeros, self.post, mean_c, flat, nodes[sl], per_coordinate=True
            )  # (L, B, d)
            w = weights[sl][:, None, None]
            maps += 0.5 * (w * dens).sum(0)
        return maps.sum(1), maps.reshape(x.shape[0], self.side, self.side)


# the noise control of the default+control sampler: principal directions of this many data
# samples (no denoiser call), a pilot of PILOT_ITEMS other points x PILOT_DRAWS draws
CONTROL_DATA, CONTROL_DIRECTIONS, PILOT_ITEMS, PILOT_DRAWS = 4096, 256, 2, 32


def efficiency(quick: bool, seed: int = 0) -> tuple[list[dict], dict]:
    task = ImageLikeGaussian()
    n_points, repeats = (6, 2) if quick else (16, 4)
    x, y = task.sample(n_points, seed=seed)
    truth, truth_maps = task.exact(x, y)
    conds = {"y": y, "null": None}
    terms = {"orth": Term("orthogonal", "y", "null")}
    data, _ = task.sample(CONTROL_DATA, seed=11 + 1000 * seed)
    x_pilot, y_pilot = task.sample(PILOT_ITEMS, seed=7 + 1000 * seed)
    t0 = time.perf_counter()
    control = fit_noise_control(task, x_pilot, {"y": y_pilot, "null": None}, terms,
                                principal_directions(data, CONTROL_DIRECTIONS), n_draws=PILOT_DRAWS, seed=999 + seed)
    control_seconds = time.perf_counter() - t0
    pilot_per_point = control.pilot_nfe // n_points
    default = LogSNRSampler()
    samplers = {
        "reference": (LogSNRSampler.reference(), None, 0),
        "default": (default, None, 0),
        "default+fitted": (LogSNRSampler(fit_logistic_to_spectrum(task.lam)), None, 0),
        "default+control": (default, control, 0),
        # the control's pilot is paid once per model (a report spreads it over all its items);
        # charged to these few points, the reference gets the pilot's evaluations on top of its own
        "reference+pilot": (LogSNRSampler.reference(), None, -pilot_per_point),
    }
    rows = []
    variance_ratio = None
    for nfe in (32, 128, 512):
        errors, map_errors, seconds = {}, {}, {}
        for name, (sampler, ctl, charged) in samplers.items():
            n_draws = (nfe - charged) // 2  # two conditions per draw
            vals, maps, std_runs = [], [], []
            t0 = time.perf_counter()
            for r in range(repeats):
                run_terms = dict(terms)
                if name == "default" and nfe == 128:
                    run_terms["std"] = Term("standard", "y", "null")
                out = integrate(task, x, conds, run_terms, sampler=sampler, n_draws=n_draws, reduction="pixel",
                                seed=100 + r + 1000 * seed, control=ctl)
                maps.append(out["orth"].value.double())
                vals.append(out["orth"].value.double().sum(dim=(1, 2)))
                if "std" in out:
                    std_runs.append(out["std"].value.double().sum(dim=(1, 2)))
            seconds[name] = time.perf_counter() - t0
            est = torch.stack(vals)  # (R, B)
            est_maps = torch.stack(maps)  # (R, B, H, W)
            errors[name] = (est - truth).square().mean().sqrt().item()
            pixel_rmse = (est_maps - truth_maps).square().mean(dim=(0, 1)).sqrt()
            map_errors[name] = (pixel_rmse / truth_maps.mean(0)).mean().item()
            if std_runs:
                orth_var = est.var(dim=0).mean().item()
                std_var = torch.stack(std_runs).var(dim=0).mean().item()
                variance_ratio = {"nfe": nfe, "standard_var": std_var, "orthogonal_var": orth_var,
                                  "ratio": std_var / orth_var}
        compared = {"default": "reference", "default+fitted": "reference", "default+control": "reference",
                    "default+control(pilot charged)": "reference+pilot"}
        for setting, ref in compared.items():
            name = setting.split("(")[0]
            rows.append({
                "setting": f"pointwise-orthogonal/{setting}", "nfe": nfe,
                "rmse_reference": errors[ref], "rmse_default": errors[name],
                "ratio": errors[ref] / errors[name],
                "seconds_reference": seconds[ref], "seconds_default": seconds[name],
            })
            rows.append({
                "setting": f"pixel-map-relative/{setting}", "nfe": nfe,
                "rmse_reference": map_errors[ref], "rmse_default": map_errors[name],
                "ratio": map_errors[ref] / map_errors[name],
            })
    meta = {
        "task": "1024-d Gaussian, DCT spectrum 1/(1+|f|^2), y = x + N(0, I)",
        "truth_mean_pointwise_mi": truth.mean().item(),
        "n_points": n_points, "repeats": repeats, "seed": seed,
        "standard_vs_orthogonal_variance": variance_ratio,
        "control": {"directions": CONTROL_DIRECTIONS, "data_samples": CONTROL_DATA, "pilot_items": PILOT_ITEMS,
                    "pilot_draws": PILOT_DRAWS, "pilot_nfe": control.pilot_nfe,
                    "pilot_nfe_per_point_charged": pilot_per_point, "fit_seconds": control_seconds},
    }
    return rows, meta


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    t = Table(title="Accuracy on exact oracles (nats)")
    for col in ("case", "estimator", "truth", "estimate", "± SE", "|error|", "NFE/sample"):
        t.add_column(col, justify="right" if col not in ("case", "estimator") else "left")
    for r in result["cases"]:
        t.add_row(r["name"], r["estimator"], f"{r['truth']:.4f}", f"{r['estimate']:.4f}", f"{r['se']:.4f}",
                  f"{r['abs_error']:.4f}", str(r["nfe"]))
    console.print(t)
    meta = result["efficiency_meta"]
    e = Table(title=f"Efficiency at equal NFE: {meta['task']} ({meta['n_points']} points x {meta['repeats']} repeats)")
    for col in ("setting", "NFE", "RMSE reference", "RMSE ours", "ratio"):
        e.add_column(col, justify="left" if col == "setting" else "right")
    for r in result["efficiency"]:
        e.add_row(r["setting"], str(r["nfe"]), f"{r['rmse_reference']:.4g}", f"{r['rmse_default']:.4g}", f"{r['ratio']:.1f}x")
    console.print(e)
    v = meta["standard_vs_orthogonal_variance"]
    c = meta["control"]
    console.print(
        f"Noise control: {c['directions']} principal directions of {c['data_samples']} data samples, pilot "
        f"{c['pilot_items']} points x {c['pilot_draws']} draws = {c['pilot_nfe']} evaluations "
        f"({c['pilot_nfe_per_point_charged']} per point: 'pilot charged' rows give the reference NFE + that many; "
        f"fitted in {c['fit_seconds']:.1f} s)"
    )
    console.print(
        f"Standard vs orthogonal pointwise variance at NFE {v['nfe']} (same draws): "
        f"{v['standard_var']:.4g} / {v['orthogonal_var']:.4g} = {v['ratio']:.1f}x"
    )
    console.print(f"[dim]{result['seconds']:.1f} s on {result['machine']}[/dim]")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sample sizes (under a minute on 2 cores)")
    parser.add_argument("--seed", type=int, default=0,
                        help="data seed of the efficiency part (its points, pilot and draws; 0 is the documented run)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cases = accuracy_cases(args.quick)
    eff, meta = efficiency(args.quick, args.seed)
    import platform

    result = {
        "quick": args.quick, "cases": cases, "efficiency": eff, "efficiency_meta": meta,
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    print_tables(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
