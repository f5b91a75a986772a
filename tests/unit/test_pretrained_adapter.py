"""The pretrained-UNet adapter: log-SNR <-> timestep through alphas_cumprod, eps and v outputs."""

from pathlib import Path

import pytest
import torch

from infodecomp.diffusion import add_noise, signal_noise_scales
from infodecomp.models import DiffusersUNetAdapter, logsnr_to_timestep, scheduler_logsnr
from tests.fixtures import write_tiny_pretrained_unet


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_adapter_reproduces_scheduler_add_noise_on_its_grid(tmp_path: Path, prediction_type: str) -> None:
    adapter = DiffusersUNetAdapter(str(write_tiny_pretrained_unet(tmp_path, prediction_type)))
    sched = adapter.scheduler
    steps = torch.tensor([0, 1, 10, 250, 500, 999])
    table = scheduler_logsnr(sched)
    logsnr = table[steps]
    torch.testing.assert_close(adapter.timestep(logsnr), steps.double(), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(len(steps), 3, 16, 16, generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    ours = add_noise(x, logsnr.float(), eps)
    theirs = sched.add_noise(x, eps, steps)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    rng = adapter.trained_range
    assert rng.low == pytest.approx(table[-1].item()) and rng.high == pytest.approx(table[0].item())
    # between grid points the timestep interpolates monotonically
    mid = logsnr_to_timestep((table[10:11] + table[11:12]) / 2, table)
    assert 10 < mid.item() < 11


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_adapter_returns_noise_for_both_parametrisations(tmp_path: Path, prediction_type: str, monkeypatch) -> None:
    adapter = DiffusersUNetAdapter(str(write_tiny_pretrained_unet(tmp_path, prediction_type)))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    logsnr = torch.tensor([-3.0, -0.5, 1.0, 4.0])
    z = add_noise(x, logsnr, eps)
    a, s = (t[:, None, None, None] for t in signal_noise_scales(logsnr))
    target = eps if prediction_type == "epsilon" else a * eps - s * x  # what a perfect UNet outputs

    class Perfect(torch.nn.Module):
        config = adapter.unet.config

        def forward(self, sample, timestep, **kwargs):
            return type("Out", (), {"sample": target})()

    monkeypatch.setattr(adapter, "unet", Perfect())
    torch.testing.assert_close(adapter(z, logsnr, {}), eps, atol=1e-5, rtol=1e-5)


def test_adapter_names_the_missing_component(tmp_path: Path) -> None:
    root = write_tiny_pretrained_unet(tmp_path)
    (root / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ValueError, match="the scheduler config is missing"):
        DiffusersUNetAdapter(str(root))
