"""``DiffusionMI`` (the diffusion estimator behind the baselines' interface), its preprocessing
and the convergence check that its training history feeds."""

from __future__ import annotations

import pytest
import torch

from infodecomp.estimators.baselines import KSG, GaussianCopula, MIEstimator
from infodecomp.evaluation import (
    SETTLE_EVALS,
    TOLERANCE_ABS,
    TOLERANCE_REL,
    InfoRow,
    flag_reason,
    flag_unsettled,
    tolerance,
    verdict,
)
from infodecomp.lightning import TensorDataModule
from infodecomp.lightning.estimator import DiffusionMI
from infodecomp.models import GaussianResidualMLP, build_backbone
from infodecomp.oracles import JointGaussian
from infodecomp.tasks import get_task


def test_copula_scores_are_gaussian_and_keep_information() -> None:
    task = get_task("asinh-student-identity-1-1-1")  # heavy tails squashed: far from Gaussian marginals
    x, y = task.sample(4000, seed=0, dtype=torch.float64)
    cx = GaussianCopula().fit(x)
    z = cx.transform(x)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 0.01  # normal scores of the ranks
    assert torch.equal(z.argsort(0), x.argsort(0))  # increasing: the order is kept exactly
    # KSG depends on ranks within each column only through neighbourhoods; same MI within its noise
    raw, gauss = KSG().fit(x, y).estimate(), KSG().fit(z, GaussianCopula().fit_transform(y)).estimate()
    assert abs(raw - gauss) < 0.05 and abs(gauss - task.mutual_information) < 0.05
    beyond = cx.transform(torch.tensor([[-1e9], [1e9]], dtype=torch.float64))
    assert beyond[0, 0] == z.min() and beyond[1, 0] == z.max()  # clipped to the fitted range
    with pytest.raises(ValueError, match="fitted on 1 columns, got 2"):
        cx.transform(torch.zeros(3, 2))


def test_tensor_data_module_checks_its_splits() -> None:
    x, y = torch.randn(10, 3), torch.randn(10, 2)
    dm = TensorDataModule((x, {"y": y}), (x[:4], {"y": y[:4]}), batch_size=4)
    assert dm.input_shape == (3,) and dm.condition_names == ["y"] and len(dm.train_dataloader()) == 2
    with pytest.raises(ValueError, match="conditions differ"):
        TensorDataModule((x, {"y": y}), (x, {"c": y}))
    with pytest.raises(ValueError, match="differ in shape"):
        TensorDataModule((x, {"y": y}), (x[:, :2], {"y": y}))


def row(name: str = "mi/y") -> InfoRow:
    return InfoRow(name, "y", "mi", 0.4, 0.01, 64, 100)


def test_a_drifting_estimate_is_flagged_not_converged() -> None:
    settled, moving, short, bad = row(), row(), row(), row()
    bad.gap, bad.gap_se = -0.5, 0.01  # a gap of 50 SE: the model is inconsistent
    flag_unsettled([settled], {"mi/y": [0.20, 0.395, 0.40, 0.41]})  # moved 0.015 over the last three
    flag_unsettled([moving], {"mi/y": [0.10, 0.25, 0.30, 0.40]})
    flag_unsettled([short], {"mi/y": [0.1, 0.4][: SETTLE_EVALS - 1]})
    flag_unsettled([bad], {"mi/y": [0.10, 0.25, 0.30, 0.40]})
    assert settled.flag == "ok" and settled.drift == pytest.approx(0.015)
    assert moving.flag == "not-converged" and moving.drift == pytest.approx(0.15)  # above the tolerance (20% of 0.40)
    assert tolerance(0.05) == TOLERANCE_ABS and tolerance(-3.0) == pytest.approx(3.0 * TOLERANCE_REL)
    assert short.flag == "ok" and short.drift is None  # too few evaluations to judge
    assert bad.flag == "model-inconsistent"  # the more serious verdict wins


def test_diffusion_mi_fits_and_reports_its_checks() -> None:
    task = get_task("1v1-normal-0.75")
    x, y = task.sample(3000, seed=0, dtype=torch.float64)
    est = DiffusionMI(max_steps=60, evaluations=3, n_draws=16, hidden=32, depth=1, warmup_steps=10)
    assert isinstance(est, MIEstimator)
    with pytest.raises(ValueError, match="call fit"):
        est.estimate()
    est.fit(x, y)
    s = est.summary()
    history = est.history["mi/y"]
    assert est.steps == 60 and len(history) == 3 and s["history"] == history
    assert s["drift"] == pytest.approx(history[-1] - history[0])  # over the last three evaluations
    row = InfoRow("mi/y", "y", "mi", s["orthogonal"], s["orthogonal_se"], 0, 0, gap=s["gap"], gap_se=s["gap_se"],
                  drift=s["drift"], baseline=s["baseline"])
    assert s["flag"] == est.flag == verdict(row)
    # the k-NN cross-check ran on the same samples: KSG on their Gaussian scores
    assert s["baseline"] == est.knn_estimate == pytest.approx(
        KSG(k=3).fit(GaussianCopula().fit_transform(x), GaussianCopula().fit_transform(y)).estimate())
    # the Gaussian base is exact for this task from the first step: 60 steps already give the truth
    assert abs(s["orthogonal"] - task.mutual_information) < 4 * s["orthogonal_se"] + 0.03
    assert est.estimate() == s["orthogonal"] and est.estimate(estimator="standard") == s["standard"]
    mid, mid_se = s["midpoint"], s["midpoint_se"]
    assert mid == pytest.approx((s["orthogonal"] + s["standard"]) / 2) and 0 < mid_se <= max(s["orthogonal_se"], s["standard_se"])
    # new samples go through the same preprocessing and model
    nx, ny = task.sample(1000, seed=5, dtype=torch.float64)
    assert abs(est.estimate(nx, ny) - s["orthogonal"]) < 5 * s["orthogonal_se"] + 0.05


def test_an_estimate_well_below_a_knn_estimate_is_flagged() -> None:
    low, close, both = row(), row(), row()
    low.baseline = 0.60  # 0.20 above 0.40: more than the tolerance (0.08)
    close.baseline = 0.46  # within it: k-NN and model agree as well as the checks ask
    both.baseline, both.gap, both.gap_se = 0.60, -0.5, 0.01
    low.flag = verdict(low)
    assert low.flag == "below-baseline" and "finds 0.600 nats, 0.200 more" in flag_reason(low)
    assert verdict(close) == "ok"
    assert verdict(both) == "model-inconsistent"  # the more serious verdict wins
    high = row()
    high.baseline = 0.10  # a k-NN estimate far *below* the model says nothing (KSG falls short in many dimensions)
    assert verdict(high) == "ok"


def test_an_under_trained_model_with_no_other_sign_is_caught_by_the_knn_check() -> None:
    """On a spiral task a few steps leave the model near its Gaussian base (about 0.2 of 1.02 nats):
    consistent (no gap) and, with one evaluation, no drift. KSG on the same samples sees more."""
    task = get_task("spiral-multinormal-sparse-3-3-2-2.0")
    x, y = task.sample(3000, seed=0, dtype=torch.float64)
    small = {"max_steps": 10, "evaluations": 1, "n_draws": 8, "hidden": 16, "depth": 1, "warmup_steps": 2}
    est = DiffusionMI(**small).fit(x, y)
    s = est.summary()
    assert s["orthogonal"] < 0.5 < s["baseline"] < task.mutual_information
    assert est.flag == "below-baseline" and s["flag"] == "below-baseline"
    off = DiffusionMI(**small, knn_check=0).fit(x, y)
    assert off.knn_estimate is None and off.summary()["baseline"] is None and off.flag != "below-baseline"
    with pytest.raises(ValueError, match="knn_check"):
        DiffusionMI(knn_check=-1)


def test_the_gaussian_base_is_the_exact_denoiser_of_a_gaussian() -> None:
    """Before training (zero output layer) the residual backbone is the fitted Gaussian's denoiser,
    for rows with the condition and rows without it alike."""
    g = JointGaussian.dense(3, 2, 0.5)
    net = GaussianResidualMLP(3, {"y": 2}, [0.0] * 5, g.cov.tolist(), hidden=16, depth=1)
    s = g.sample(64, seed=0)
    z, logsnr = torch.randn(64, 3, generator=torch.Generator().manual_seed(1)), torch.linspace(-6, 6, 64)
    y = s["y"].float().clone()
    y[:20] = float("nan")  # the null condition of a vector
    with torch.no_grad():
        out = net(z, logsnr, {"y": y}).double()
    exact = g.denoiser("x")
    given = exact(z[20:].double(), logsnr[20:].double(), {"y": s["y"][20:].double()})
    assert torch.allclose(out[20:], given, atol=1e-5)
    assert torch.allclose(out[:20], exact(z[:20].double(), logsnr[:20].double(), None), atol=1e-5)
    rebuilt = build_backbone(net.config)
    assert isinstance(rebuilt, GaussianResidualMLP) and torch.equal(rebuilt.joint_cov, net.joint_cov)
    with pytest.raises(ValueError, match="cover x and the conditions"):
        GaussianResidualMLP(3, {"y": 2}, [0.0] * 4, g.cov.tolist())


def test_diffusion_mi_denoises_the_smaller_side_and_rejects_bad_settings() -> None:
    x, y = get_task("swissroll_x-normal_cdf-1v1-normal-0.75").sample(600, seed=0, dtype=torch.float64)
    est = DiffusionMI(max_steps=4, evaluations=1, n_draws=4, hidden=16, depth=1).fit(x, y)
    assert est.module.input_shape == (1,)  # y (1-d) is denoised given x (2-d)
    assert est.module.condition_spec == {"y": ("vector", 2)}
    for bad, message in (({"train_fraction": 1.0}, "train_fraction"), ({"preprocess": "rank"}, "preprocess"),
                         ({"diffuse": "z"}, "diffuse"), ({"evaluations": 0}, "evaluations")):
        with pytest.raises(ValueError, match=message):
            DiffusionMI(**bad)


@pytest.mark.slow
def test_diffusion_mi_at_the_benchmark_budget_is_accurate_and_trusted() -> None:
    task = get_task("1v1-normal-0.75")
    x, y = task.sample(12000, seed=0, dtype=torch.float64)
    est = DiffusionMI(threads=1).fit(x, y)
    s = est.summary()
    assert s["flag"] == "ok"
    assert abs(s["orthogonal"] - task.mutual_information) < 4 * s["orthogonal_se"] + 0.02  # model error <= 0.02
