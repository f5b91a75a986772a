"""Train a conditional diffusion model with Lightning (``infodecomp-train`` once installed).

    python train.py                                   # default: shapes world, attribute labels, CPU
    python train.py --config configs/experiment/digits.yaml
    python train.py --config configs/experiment/vector.yaml --data.init_args.task multinormal-dense-5-5-0.5
    python train.py --config configs/debug.yaml       # a few steps, for smoke tests
    python train.py --ckpt_path last                  # resume this experiment's newest run (or start one)
    python train.py --trainer.devices 2 --trainer.strategy ddp                        # scale out
    python train.py --print_config                    # the resolved configuration

Input errors end with one line and exit status 2 (``--verbose`` shows the traceback).
"""

import sys

from infodecomp.cli import main

if __name__ == "__main__":
    sys.exit(main())
