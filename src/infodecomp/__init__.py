"""infodecomp: information-theoretic interpretation of diffusion models.

Read mutual information, conditional mutual information, pointwise and per-pixel
information and log-likelihood out of any denoiser ``eps_hat(z, logsnr, cond)``
(Kong et al., "Interpretable Diffusion via Information Decomposition", ICLR 2024).
"""

from infodecomp.diffusion import LogSNRSampler, TruncatedLogistic, UniformLogSNR
from infodecomp.estimators import (
    conditional_mutual_information,
    information_contrasts,
    mmse_curve,
    mmse_curves,
    mutual_information,
    nll,
)
from infodecomp.interface import Curve, Denoiser, Estimate, LogSNRRange

__version__ = "0.1.0"

__all__ = [
    "Curve",
    "Denoiser",
    "Estimate",
    "LogSNRRange",
    "LogSNRSampler",
    "TruncatedLogistic",
    "UniformLogSNR",
    "conditional_mutual_information",
    "information_contrasts",
    "mmse_curve",
    "mmse_curves",
    "mutual_information",
    "nll",
]
