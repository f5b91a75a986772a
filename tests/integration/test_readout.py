"""The mixture readout starts from training images, the same on every process, and only once."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from infodecomp.lightning import DiffusionModule, ShapesDataModule
from infodecomp.models import LabelledUNet


def _fit(module: DiffusionModule, dm: ShapesDataModule, tmp_path: Path) -> None:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, dm)


def test_readout_templates_start_from_evenly_spaced_training_images_once(tmp_path: Path) -> None:
    dm = ShapesDataModule(size=16, n_train=64, n_val=16, batch_size=8, truth_samples=200)
    net = LabelledUNet(attributes={"shape": 3, "colour": 3, "position": 4}, block_out_channels=(8, 16),
                       norm_num_groups=4, readout=8)
    module = DiffusionModule(net, cond_dropout=0.5, lr=0.0)  # lr 0: the step leaves the weights as set
    assert float(net.readout.ready) == 0.0
    _fit(module, dm, tmp_path)
    picked = [round(i * 63 / 7) for i in range(8)]  # 0, 9, 18, ..., 63
    images = torch.stack([dm.train_set[i]["x"] for i in picked]).flatten(1)
    for readout in (module.backbone.readout, module.ema.module.readout):
        assert float(readout.ready) == 1.0
        torch.testing.assert_close(readout.templates.detach(), images)
        own = readout.label_logits["colour"].detach().argmax(1)
        assert own.tolist() == [int(dm.train_set[i]["cond"]["colour"]) for i in picked]
    # a second fit (a resumed run, or fine-tuning) keeps what the model has learned
    with torch.no_grad():
        module.backbone.readout.templates.fill_(0.5)
    _fit(module, dm, tmp_path)
    assert torch.all(module.backbone.readout.templates == 0.5)
