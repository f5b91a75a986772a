"""infodecomp: information-theoretic interpretation of diffusion models.

Read mutual information, conditional mutual information, pointwise and per-pixel
information and log-likelihood out of any denoiser ``eps_hat(z, logsnr, cond)``
(Kong et al., "Interpretable Diffusion via Information Decomposition", ICLR 2024).
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562), so the command-line entry points answer bad input
# before torch is loaded.
_EXPORTS = {
    "LogSNRSampler": "infodecomp.diffusion", "TruncatedLogistic": "infodecomp.diffusion",
    "UniformLogSNR": "infodecomp.diffusion", "conditional_mutual_information": "infodecomp.estimators",
    "information_contrasts": "infodecomp.estimators", "mmse_curve": "infodecomp.estimators",
    "mmse_curves": "infodecomp.estimators", "mutual_information": "infodecomp.estimators",
    "nll": "infodecomp.estimators", "Curve": "infodecomp.interface", "Denoiser": "infodecomp.interface",
    "Estimate": "infodecomp.interface", "LogSNRRange": "infodecomp.interface",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'infodecomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


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
