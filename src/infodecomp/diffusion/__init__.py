"""The VP channel, log-SNR proposals and the samplers that draw (alpha, eps)."""

from infodecomp.diffusion.channel import (
    add_noise,
    gaussian_mmse,
    predict_eps,
    predict_x0,
    signal_noise_scales,
)
from infodecomp.diffusion.proposals import (
    Proposal,
    TruncatedLogistic,
    UniformLogSNR,
    fit_logistic_to_data,
    fit_logistic_to_spectrum,
)
from infodecomp.diffusion.sampling import LogSNRSampler, derive_seed

__all__ = [
    "LogSNRSampler",
    "Proposal",
    "TruncatedLogistic",
    "UniformLogSNR",
    "add_noise",
    "derive_seed",
    "fit_logistic_to_data",
    "fit_logistic_to_spectrum",
    "gaussian_mmse",
    "predict_eps",
    "predict_x0",
    "signal_noise_scales",
]
