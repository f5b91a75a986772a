"""Estimators of likelihood, MMSE, MI and CMI: one engine, several front doors."""

from infodecomp.estimators.control import NoiseControl, fit_noise_control, principal_directions
from infodecomp.estimators.engine import REDUCTIONS, Term, evaluate_curve, integrate
from infodecomp.estimators.information import (
    batch_noise_control,
    conditional_mutual_information,
    information_contrasts,
    mutual_information,
)
from infodecomp.estimators.likelihood import nll
from infodecomp.estimators.mmse import mmse_curve, mmse_curves
from infodecomp.estimators.pid import PID_MEASURES, PIDResult, partial_information

__all__ = [
    "NoiseControl",
    "batch_noise_control",
    "fit_noise_control",
    "principal_directions",
    "PID_MEASURES",
    "PIDResult",
    "REDUCTIONS",
    "Term",
    "conditional_mutual_information",
    "evaluate_curve",
    "information_contrasts",
    "integrate",
    "mmse_curve",
    "mmse_curves",
    "mutual_information",
    "nll",
    "partial_information",
]
