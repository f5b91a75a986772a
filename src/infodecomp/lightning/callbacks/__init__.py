"""Evaluation callbacks: information, MMSE curves, heatmaps, likelihood, samples and text probes."""

from infodecomp.lightning.callbacks.base import EvaluationCallback
from infodecomp.lightning.callbacks.heatmap import InfoHeatmapCallback
from infodecomp.lightning.callbacks.likelihood import LikelihoodCallback
from infodecomp.lightning.callbacks.mmse import MMSECurveCallback
from infodecomp.lightning.callbacks.mutual_information import MutualInformationCallback
from infodecomp.lightning.callbacks.pid import PIDCallback
from infodecomp.lightning.callbacks.probes import TextProbeCallback
from infodecomp.lightning.callbacks.samples import SampleGridCallback

__all__ = [
    "EvaluationCallback",
    "InfoHeatmapCallback",
    "LikelihoodCallback",
    "MMSECurveCallback",
    "MutualInformationCallback",
    "PIDCallback",
    "SampleGridCallback",
    "TextProbeCallback",
]
