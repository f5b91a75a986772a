"""Train a conditional diffusion model with Lightning.

    python train.py                                   # default: shapes world, attribute labels, CPU
    python train.py --config configs/experiment/digits.yaml
    python train.py --config configs/experiment/vector.yaml --data.init_args.task multinormal-dense-5-5-0.5
    python train.py --config configs/debug.yaml       # a few steps, for smoke tests
    python train.py --ckpt_path outputs/runs/shapes/version_0/checkpoints/last.ckpt   # resume
    python train.py --trainer.devices 2 --trainer.strategy ddp                        # scale out
    python train.py --print_config                    # the resolved configuration
"""

from pathlib import Path

from infodecomp.cli import train_main

CONFIGS = Path(__file__).resolve().parent / "configs"

if __name__ == "__main__":
    train_main(default_config_files=[CONFIGS / "default.yaml"])
