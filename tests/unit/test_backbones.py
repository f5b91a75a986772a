"""Backbone details that the estimators depend on: the log-SNR gate on label embeddings."""

import pytest
import torch

from infodecomp.models import LabelledUNet, build_backbone
from infodecomp.models.backbones import SNRGate

ATTRS = {"shape": 3, "colour": 3, "position": 4}


def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 3, 8, 8, generator=g)
    logsnr = torch.linspace(-6, 8, n)
    cond = {"shape": torch.tensor([0, 1, 2, 0]), "colour": torch.tensor([2, 1, 0, 1]),
            "position": torch.tensor([3, 2, 1, 0])}
    null = {k: torch.full_like(v, -1) for k, v in cond.items()}
    return z, logsnr, cond, null


def test_gate_starts_open_and_stays_in_unit_interval() -> None:
    gate = SNRGate(3, 16)
    g = gate(torch.linspace(-12, 12, 7))
    assert g.shape == (7, 3, 16)
    torch.testing.assert_close(g, torch.full_like(g, torch.sigmoid(torch.tensor(3.0)).item()))
    with torch.no_grad():
        gate.out.weight.normal_(std=5.0)
    g = gate(torch.linspace(-12, 12, 7))
    assert bool(((g > 0) & (g < 1)).all())
    assert g.std() > 0.1  # now it depends on log-SNR


def test_closed_gate_removes_every_label_effect_and_open_gate_keeps_them() -> None:
    torch.manual_seed(0)
    net = LabelledUNet(image_size=8, attributes=ATTRS, block_out_channels=(8, 8), norm_num_groups=4, snr_gate=True)
    for table in net.labels.values():  # labels strong enough to matter
        torch.nn.init.normal_(table.weight, std=1.0)
    z, logsnr, cond, null = _inputs()
    with torch.no_grad():
        assert (net(z, logsnr, cond) - net(z, logsnr, null)).abs().max() > 1e-3
        net.gate.out.bias.fill_(-60.0)  # sigmoid(-60) ~ 1e-26: gate shut at every log-SNR
        torch.testing.assert_close(net(z, logsnr, cond), net(z, logsnr, null), rtol=0, atol=1e-6)


def test_gate_round_trips_through_the_backbone_config() -> None:
    net = LabelledUNet(image_size=8, attributes=ATTRS, block_out_channels=(8, 8), norm_num_groups=4, snr_gate=True)
    rebuilt = build_backbone(net.config)
    assert rebuilt.gate is not None
    rebuilt.load_state_dict(net.state_dict())
    plain = LabelledUNet(image_size=8, attributes=ATTRS, block_out_channels=(8, 8), norm_num_groups=4)
    assert plain.gate is None and not any(k.startswith("gate.") for k in plain.state_dict())


def test_fading_gate_is_bounded_by_a_decreasing_envelope_that_reaches_zero() -> None:
    gate = SNRGate(3, 16, fade=4.0)
    with torch.no_grad():
        gate.out.weight.normal_(std=5.0)  # whatever the free part learns...
    alphas = torch.linspace(-12, 12, 49)
    g = gate(alphas)
    envelope = torch.sigmoid(-1.5 * (alphas - 4.0))
    assert bool((g <= envelope[:, None, None] + 1e-6).all())  # ...it stays under the envelope
    assert g[alphas == 12.0].max() < 1e-5  # shut where no label can add anything
    assert SNRGate(3, 16, fade=4.0)(torch.tensor([-4.0])).min() > 0.94  # and starts open there
    # the envelope's position and steepness are learned
    names = {n for n, p in gate.named_parameters() if p.requires_grad}
    assert {"fade", "rate"} <= names


def test_fading_gate_round_trips_through_the_backbone_config() -> None:
    net = LabelledUNet(image_size=8, attributes=ATTRS, block_out_channels=(8, 8), norm_num_groups=4,
                       snr_gate=True, gate_fade=3.0)
    rebuilt = build_backbone(net.config)
    assert rebuilt.gate.fade is not None
    rebuilt.load_state_dict(net.state_dict())
    z, logsnr, cond, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z, logsnr, cond), net(z, logsnr, cond))


def test_joint_embedding_starts_at_zero_and_tells_combinations_apart() -> None:
    """One vector per combination of values ("not given" included): zero at the start, so the
    model starts as the sum of per-attribute embeddings; each combination has its own row."""
    torch.manual_seed(0)
    net = LabelledUNet(image_size=8, attributes={"y1": 2, "y2": 2}, block_out_channels=(8, 16), norm_num_groups=4,
                       joint_embedding=True).eval()
    assert net.joint.num_embeddings == 9 and net.init_args["joint_embedding"] is True
    z, logsnr = torch.randn(4, 3, 8, 8), torch.zeros(4)
    cond = {"y1": torch.tensor([0, 0, 1, 1]), "y2": torch.tensor([0, 1, 0, -1])}
    plain = LabelledUNet(image_size=8, attributes={"y1": 2, "y2": 2}, block_out_channels=(8, 16),
                         norm_num_groups=4).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("joint")})
    with torch.no_grad():
        torch.testing.assert_close(net(z, logsnr, cond), plain(z, logsnr, cond))
        net.joint.weight[1 * 3 + 2] = 1.0  # y1 = 1 with y2 not given
        out, ref = net(z, logsnr, cond), plain(z, logsnr, cond)
    assert torch.allclose(out[:3], ref[:3]) and not torch.allclose(out[3], ref[3])
    with pytest.raises(ValueError, match="at most 65536"):
        LabelledUNet(attributes={"a": 300, "b": 300}, joint_embedding=True)


def test_mixture_readout_holding_the_true_mixture_is_its_exact_denoiser() -> None:
    """With the true templates, variance and p(label | component), the readout's noise
    prediction is the exact oracle's, for a noisy label, a certain one, both and neither given."""
    import math

    from infodecomp.models.backbones import MixtureReadout
    from infodecomp.oracles import GaussianMixtureOracle

    g = torch.Generator().manual_seed(0)
    shape, var = (3, 4, 4), 0.3
    means = 1.5 * torch.randn(6, 48, generator=g, dtype=torch.float64)
    true = {"a": torch.tensor([0, 1, 2, 0, 1, 2]), "b": torch.tensor([0, 0, 1, 1, 0, 1])}
    conf = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]], dtype=torch.float64)
    oracle = GaussianMixtureOracle(means, var, labels=true, shape=shape, confusion={"a": conf})
    readout = MixtureReadout(shape, 6, {"a": 3, "b": 2}).double()
    with torch.no_grad():
        readout.templates.copy_(means)
        readout.log_var.fill_(math.log(var))
        readout.label_logits["a"].copy_(conf[true["a"]].log())
        certain = torch.nn.functional.one_hot(true["b"], 2).double()
        readout.label_logits["b"].copy_((certain - 1) * 1e4)  # p(other) = e^-10000
    n = 8
    logsnr = torch.linspace(-4, 4, n, dtype=torch.float64)
    x, _ = oracle.sample(n, seed=1)
    z = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1) * x + torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1) * \
        torch.randn(x.shape, generator=g, dtype=torch.float64)
    conds = {"a": torch.tensor([-1, 0, 1, 2, -1, 2, 0, -1]), "b": torch.tensor([-1, -1, 0, 1, 1, 0, -1, 0])}
    xhat, eps = readout(z, logsnr, conds)
    exact = oracle.denoise(z, logsnr, conds)
    torch.testing.assert_close(eps, exact, rtol=1e-9, atol=1e-9)
    a, s = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1), torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(a * xhat + s * eps, z, rtol=1e-9, atol=1e-9)  # the channel, exactly
    # a label that is not given is summed out: one row without labels matches the marginal
    torch.testing.assert_close(eps[:1], oracle.denoise(z[:1], logsnr[:1], None), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_unet_with_a_readout_starts_as_the_readouts_prediction(prediction: str) -> None:
    """The UNet's output layer starts at zero, so the module's noise prediction is the mixture's,
    read as eps or as v; the configuration keeps the readout."""
    from infodecomp.lightning import DiffusionModule

    torch.manual_seed(0)
    net = LabelledUNet(image_size=8, attributes={"shape": 3}, block_out_channels=(8, 16), norm_num_groups=4, readout=5)
    module = DiffusionModule(net, prediction=prediction, loss="v_mse" if prediction == "v" else "eps_mse")
    assert net.prediction == prediction and module.ema.module.prediction == prediction
    z, logsnr = torch.randn(4, 3, 8, 8), torch.linspace(-3, 3, 4)
    cond = {"shape": torch.tensor([0, 1, -1, 2])}
    with torch.no_grad():
        _, eps = net.readout(z, logsnr, cond)
        torch.testing.assert_close(module(z, logsnr, cond, ema=False), eps, rtol=1e-4, atol=1e-5)
    rebuilt = build_backbone(net.config)
    assert rebuilt.readout is not None and rebuilt.readout.templates.shape == (5, 192)
    with pytest.raises(ValueError, match="readout must be >= 0"):
        LabelledUNet(readout=-1)


def test_mixture_readout_fit_recovers_a_noisy_labelled_mixture_and_merges_split_clusters() -> None:
    """k-means on samples of 5 images (noise 0.1) with 12 templates: 5 distinct templates, each the
    mean of its image's samples (within 3x its expected squared error of the image), the share of
    its samples, the noise variance, and the noisy label's confusion row within 4 binomial SE."""
    from infodecomp.models.backbones import MixtureReadout

    g = torch.Generator().manual_seed(0)
    shape, sigma, n, keep = (3, 4, 4), 0.1, 5000, 0.7
    means = torch.randn(5, 48, generator=g, dtype=torch.float64)
    comp = torch.randint(0, 5, (n,), generator=g)
    x = (means[comp] + sigma * torch.randn(n, 48, generator=g, dtype=torch.float64)).view(n, *shape)
    klass = comp % 3  # the rater is right with probability keep, else names one of the two others
    other = (klass + torch.randint(1, 3, (n,), generator=g)) % 3
    label = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < keep, klass, other)
    label[:50] = -1  # not given: left out of the frequencies
    readout = MixtureReadout(shape, 12, {"a": 3}).double()
    readout.init_from(x, {"a": label})
    assert float(readout.ready) == 1.0
    distinct = torch.unique(readout.templates.detach(), dim=0)
    assert distinct.shape[0] == 5
    share = torch.softmax(readout.bias.detach(), 0)
    p_label = torch.softmax(readout.label_logits["a"].detach(), 1)
    for row in distinct:
        j = int(((means - row) ** 2).sum(1).argmin())
        mine = comp == j
        members = (readout.templates.detach() == row).all(1)
        torch.testing.assert_close(row, x[mine].flatten(1).mean(0))  # its cluster's mean, merged exactly
        assert float(((row - means[j]) ** 2).sum()) < 3 * 48 * sigma**2 / int(mine.sum())
        assert abs(float(share[members].sum()) - float(mine.float().mean())) < 1e-3  # the cluster's share
        truth = torch.full((3,), (1 - keep) / 2, dtype=torch.float64)
        truth[j % 3] = keep
        m = int((mine & (label >= 0)).sum())
        assert torch.all((p_label[members] - truth).abs() < 4 * (keep * (1 - keep) / m) ** 0.5)
    assert abs(readout.log_var.exp().item() / sigma**2 - 1) < 0.02


def test_mixture_readout_fit_to_fewer_rows_than_templates_weighs_each_row_once() -> None:
    from infodecomp.models.backbones import MixtureReadout

    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    readout = MixtureReadout((3, 4, 4), 8, {"a": 2}).double()
    readout.init_from(x, {"a": torch.tensor([0, 1, 1])})
    share = torch.softmax(readout.bias.detach(), 0)
    for row in x.flatten(1):
        members = (readout.templates.detach() == row).all(1)
        assert members.any()
        assert abs(float(share[members].sum()) - 1 / 3) < 1e-3
    assert torch.unique(readout.templates.detach(), dim=0).shape[0] == 3
    with pytest.raises(ValueError, match="init_from needs images of shape"):
        readout.init_from(torch.zeros(3, 3, 8, 8, dtype=torch.float64))
