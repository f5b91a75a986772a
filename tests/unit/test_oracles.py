"""The oracles are exact: check them against brute force and closed forms."""

import math

import pytest
import torch

from infodecomp.diffusion import add_noise, predict_x0
from infodecomp.oracles import (
    GaussianMixtureOracle,
    GaussianOracle,
    JointGaussian,
    exact_orthogonal_density,
)


def _brute_force_posterior_mean_1d(z: float, logsnr: float, prior_logpdf) -> float:
    """E[x | z] for a scalar prior by quadrature on a fine grid."""
    a, s = math.sqrt(1 / (1 + math.exp(-logsnr))), math.sqrt(1 / (1 + math.exp(logsnr)))
    grid = torch.linspace(-12, 12, 400001, dtype=torch.float64)
    log_w = prior_logpdf(grid) - 0.5 * ((z - a * grid) / s) ** 2
    w = torch.softmax(log_w, dim=0)
    return (w * grid).sum().item()


@pytest.mark.parametrize("logsnr", [-3.0, 0.0, 2.5])
def test_gaussian_oracle_matches_bayes_posterior(logsnr: float) -> None:
    oracle = GaussianOracle(torch.tensor([0.7]), torch.tensor([[2.0]]))
    z = torch.tensor([[0.3], [-1.5]], dtype=torch.float64)
    ls = torch.full((2,), logsnr, dtype=torch.float64)
    x_hat = predict_x0(z, ls, oracle(z, ls))
    for i in range(2):
        truth = _brute_force_posterior_mean_1d(
            z[i, 0].item(), logsnr, lambda g: -0.25 * (g - 0.7) ** 2
        )
        assert x_hat[i, 0].item() == pytest.approx(truth, abs=1e-6)


def test_mixture_oracle_matches_bayes_posterior() -> None:
    means = torch.tensor([[-2.0], [1.0], [3.0]])
    var = torch.tensor([0.3, 0.5, 0.2])
    w = torch.tensor([0.2, 0.5, 0.3])
    mix = GaussianMixtureOracle(means, var, weights=w)
    full = GaussianMixtureOracle(means, var[:, None, None], weights=w)

    def logpdf(g):
        comps = torch.stack(
            [w[k].log() - 0.5 * (g - means[k, 0]) ** 2 / var[k] - 0.5 * var[k].log() for k in range(3)]
        )
        return comps.logsumexp(0)

    z = torch.tensor([[0.4]], dtype=torch.float64)
    for logsnr in (-1.0, 1.5, 4.0):
        ls = torch.tensor([logsnr], dtype=torch.float64)
        truth = _brute_force_posterior_mean_1d(0.4, logsnr, logpdf)
        assert predict_x0(z, ls, mix(z, ls))[0, 0].item() == pytest.approx(truth, abs=1e-6)
        assert predict_x0(z, ls, full(z, ls))[0, 0].item() == pytest.approx(truth, abs=1e-6)


def test_mixture_conditioning_and_batching() -> None:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    labels = {"colour": torch.tensor([0, 0, 1, 1, 2, 2]), "shape": torch.tensor([0, 1, 0, 1, 0, 1])}
    mix = GaussianMixtureOracle(means, 0.2, labels=labels)
    z = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    ls = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    # conditioning on both attributes picks one component: a single Gaussian
    cond = {"colour": torch.tensor([1, 2, 0]), "shape": torch.tensor([0, 1, 1])}
    comp = torch.tensor([2, 5, 1])
    for i in range(3):
        single = GaussianOracle(means[comp[i]], 0.2 * torch.eye(4, dtype=torch.float64))
        torch.testing.assert_close(
            mix(z[i : i + 1], ls[i : i + 1], {k: v[i : i + 1] for k, v in cond.items()}),
            single(z[i : i + 1], ls[i : i + 1]),
        )
    # -1 means "not given"; batching None with labels equals separate calls
    partial = {"colour": torch.tensor([1, -1, 0]), "shape": torch.tensor([-1, -1, 1])}
    merged = mix.batch_conditions([None, partial], [3, 3])
    out = mix(torch.cat([z, z]), torch.cat([ls, ls]), merged)
    torch.testing.assert_close(out[:3], mix(z, ls, None))
    torch.testing.assert_close(out[3:], mix(z, ls, partial))
    torch.testing.assert_close(mix(z, ls, {"colour": torch.tensor([-1, -1, -1])}), mix(z, ls))
    with pytest.raises(ValueError, match="no mixture component"):
        mix(z, ls, {"colour": torch.tensor([7, 0, 0])})


def test_joint_gaussian_closed_forms() -> None:
    g = JointGaussian.bivariate(0.75)
    assert g.mutual_information("x", "y") == pytest.approx(-0.5 * math.log(1 - 0.75**2), abs=1e-12)
    assert g.mutual_information("x", "y") == pytest.approx(0.4133, abs=1e-4)
    assert JointGaussian.dense(5, 5, 0.5).mutual_information("x", "y") == pytest.approx(0.5928, abs=1e-4)
    assert JointGaussian.paired(25, 25, 2, 0.8).mutual_information("x", "y") == pytest.approx(1.0217, abs=1e-4)
    # pointwise MI averages to MI; log p(x|y) is the conditional Gaussian density
    s = g.sample(200000, seed=1)
    pmi = g.pointwise_mutual_information(s, "x", "y")
    assert pmi.mean().item() == pytest.approx(0.4133, abs=4 * pmi.std().item() / math.sqrt(200000))
    x, y = s["x"][:5, 0].double(), s["y"][:5, 0].double()
    direct = -0.5 * math.log(2 * math.pi * (1 - 0.75**2)) - 0.5 * (x - 0.75 * y) ** 2 / (1 - 0.75**2)
    torch.testing.assert_close(g.log_prob("x", s["x"][:5], {"y": s["y"][:5]}), direct)


def test_exact_orthogonal_information_matches_mi_on_average() -> None:
    g = JointGaussian.dense(3, 3, 0.5)
    s = g.sample(20000, seed=4)
    io = g.orthogonal_information_exact(s, "x", "y", n_nodes=400)
    assert (io >= 0).all()
    se = io.std().item() / math.sqrt(io.numel())
    assert io.mean().item() == pytest.approx(g.mutual_information("x", "y"), abs=4 * se)


def test_spectral_orthogonal_density_matches_general_one() -> None:
    # y = x + noise in a shared eigenbasis: both formulas must agree
    gen = torch.Generator().manual_seed(0)
    d = 4
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.tensor([2.0, 1.0, 0.3, 0.05], dtype=torch.float64)
    tau = 0.5
    s_xx = q @ torch.diag(lam) @ q.T
    cov = torch.cat([torch.cat([s_xx, s_xx], 1), torch.cat([s_xx, s_xx + tau * torch.eye(d)], 1)], 0)
    g = JointGaussian(cov, {"x": d, "y": d})
    s = g.sample(5, seed=0)
    general = g.orthogonal_information_exact(s, "x", "y", low=-10, high=10, n_nodes=300)
    post = lam * tau / (lam + tau)
    mean_c = (s["y"].double() @ q) * (lam / (lam + tau)) @ q.T
    from infodecomp.oracles.gaussian import _gauss_legendre

    nodes, weights = _gauss_legendre(300, -10, 10)
    dens = exact_orthogonal_density(q, lam, torch.zeros(5, d, dtype=torch.float64), post, mean_c, s["x"], nodes)
    torch.testing.assert_close(0.5 * (weights[:, None] * dens).sum(0), general)
    per_coord = exact_orthogonal_density(
        q, lam, torch.zeros(5, d, dtype=torch.float64), post, mean_c, s["x"], nodes, per_coordinate=True
    )
    torch.testing.assert_close(per_coord.sum(-1), dens)


def test_oracle_samples_have_their_covariance() -> None:
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    x = GaussianOracle(torch.tensor([1.0, -1.0]), cov).sample(100000, seed=0).double()
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.01, rtol=0)
    assert add_noise(x, torch.zeros(len(x), dtype=torch.float64), torch.zeros_like(x)).shape == x.shape
