"""Probes of text-to-image models: word heatmaps, compositional tests, localization, interventions.

All information comes from the estimation core (:mod:`infodecomp.estimators`); a probe only
builds the conditions and reads the results. Models enter through :class:`TextModel`.
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
    combine,
    localization,
    normalise,
)
from infodecomp.probes.text import TextModel, caption_words, without_word, word_positions
from infodecomp.probes.words import WordMaps, word_by_word_cmi, word_heatmaps

__all__ = [
    "ARO_SETS", "AROItem", "CompositionalResult", "Edit", "InterventionResult", "LocalizationResult", "TextModel",
    "WordMaps", "calibrate_threshold", "caption_words", "change_correlations", "combine", "compositional_accuracy",
    "intervene", "load_aro", "localization", "multiple_choice_accuracy", "normalise", "record_cross_attention",
    "score_captions", "shapes_perturbations", "without_word", "word_attention_maps", "word_by_word_cmi",
    "word_heatmaps", "word_positions",
]
