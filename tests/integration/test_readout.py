"""The mixture readout is fitted to training images before the first step, the same on every process, and only once."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from infodecomp.lightning import DiffusionModule, ShapesDataModule
from infodecomp.models import LabelledUNet
from infodecomp.models.backbones import MixtureReadout


def _fit(module: DiffusionModule, dm: ShapesDataModule, tmp_path: Path) -> None:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, dm)


def test_readout_is_fitted_to_the_training_images_once_and_the_ema_copy_matches(tmp_path: Path) -> None:
    dm = ShapesDataModule(size=16, n_train=64, n_val=16, batch_size=8, truth_samples=200)
    net = LabelledUNet(attributes={"shape": 3, "colour": 3, "position": 4}, block_out_channels=(8, 16),
                       norm_num_groups=4, readout=8)
    module = DiffusionModule(net, cond_dropout=0.5, lr=0.0)  # lr 0: the step leaves the weights as set
    assert float(net.readout.ready) == 0.0
    _fit(module, dm, tmp_path)
    # all 64 training images (under READOUT_POOL_VALUES numbers), fitted as MixtureReadout.init_from fits them
    items = [dm.train_set[i] for i in range(64)]
    expected = MixtureReadout((3, 16, 16), 8, {"shape": 3, "colour": 3, "position": 4})
    expected.init_from(torch.stack([it["x"] for it in items]),
                       {a: torch.tensor([int(it["cond"][a]) for it in items]) for a in ("shape", "colour", "position")})
    for readout in (module.backbone.readout, module.ema.module.readout):
        assert float(readout.ready) == 1.0
        for name, p in expected.named_parameters():
            torch.testing.assert_close(dict(readout.named_parameters())[name].detach(), p.detach())
    # a second fit (a resumed run, or fine-tuning) keeps what the model has learned
    with torch.no_grad():
        module.backbone.readout.templates.fill_(0.5)
    _fit(module, dm, tmp_path)
    assert torch.all(module.backbone.readout.templates == 0.5)
