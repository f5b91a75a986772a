"""Post-hoc analysis of trained runs and pretrained pipelines: the top layer, behind ``analyze.py``.

Every number here comes from the same functions the training callbacks use
(:mod:`infodecomp.evaluation`, :mod:`infodecomp.probes`), driven by Lightning's loops.
"""

from infodecomp.analysis.common import AnalysisError, load_run, write_atomically

__all__ = ["AnalysisError", "load_run", "write_atomically"]
