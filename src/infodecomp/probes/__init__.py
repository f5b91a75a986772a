"""Probes of text-to-image models: word heatmaps, compositional tests, localization, interventions.

All information comes from the estimation core (:mod:`infodecomp.estimators`); a probe only
builds the conditions and reads the results. Models enter as a
:class:`~infodecomp.interface.TextDenoiser` (in-repo ``DiffusionModule``s through :class:`TextModel`).
:mod:`infodecomp.probes.runners` runs whole probes on captioned scenes or images for the
training callback and the analysis reports alike.
"""

from infodecomp.probes.aro import ARO_SETS, AROItem, load_aro
from infodecomp.probes.attention import record_cross_attention, word_attention_maps
from infodecomp.probes.compositional import (
    CompositionalResult,
    compositional_accuracy,
    multiple_choice_accuracy,
    score_captions,
    shapes_perturbations,
)
from infodecomp.probes.interventions import Edit, InterventionResult, change_correlations, intervene
from infodecomp.probes.localization import (
    LocalizationResult,
    calibrate_threshold,
    calibration_split,
    combine,
    localization,
    normalise,
)
from infodecomp.probes.pid import WordPID, word_pid
from infodecomp.probes.text import (
    TextModel,
    as_text_denoiser,
    caption_words,
    without_word,
    word_positions,
)
from infodecomp.probes.words import WordMaps, word_by_word_cmi, word_heatmaps

__all__ = [
    "ARO_SETS", "AROItem", "CompositionalResult", "Edit", "InterventionResult", "LocalizationResult", "TextModel",
    "WordMaps", "WordPID", "as_text_denoiser", "calibrate_threshold", "calibration_split", "caption_words", "change_correlations", "combine", "compositional_accuracy",
    "intervene", "load_aro", "localization", "multiple_choice_accuracy", "normalise", "record_cross_attention",
    "score_captions", "shapes_perturbations", "without_word", "word_attention_maps", "word_by_word_cmi",
    "word_heatmaps", "word_pid", "word_positions",
]
