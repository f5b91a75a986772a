"""Analyse a trained run or a pretrained pipeline (``infodecomp-analyze`` once installed).

    python analyze.py report outputs/runs/shapes            # information, maps, MMSE, likelihood, samples
    python analyze.py heatmap | compositional | localize | intervene [--model DIR ...]   # text probes

``python analyze.py --help`` lists every subcommand and option (see infodecomp.analysis.cli).
Input errors end with one line on stderr and exit status 2.
"""

import sys

from infodecomp.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
