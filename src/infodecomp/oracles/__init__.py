"""Exact denoisers and ground-truth information: Gaussians and Gaussian mixtures."""

from infodecomp.oracles.gaussian import (
    GaussianOracle,
    JointGaussian,
    JointGaussianDenoiser,
    exact_orthogonal_density,
    gaussian_eps_hat,
)
from infodecomp.oracles.mixture import GaussianMixtureOracle

__all__ = [
    "GaussianMixtureOracle",
    "GaussianOracle",
    "JointGaussian",
    "JointGaussianDenoiser",
    "exact_orthogonal_density",
    "gaussian_eps_hat",
]
