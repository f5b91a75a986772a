"""The "Beyond Normal" suite and the conditional-MI tasks: ids, ground truth, samples, transforms."""

import json
import math
import subprocess
import sys

import pytest
import torch

from infodecomp import conditional_mutual_information
from infodecomp.estimators.baselines import KSG, GaussianMI
from infodecomp.tasks import UnknownTaskError, conditional_tasks, get_task, task_ids
from infodecomp.tasks import transforms as tf

# Published ground truth (Czyż et al. 2023), as listed in the issue.
PUBLISHED = {
    "1v1-normal-0.75": (1, 1, 0.4133), "normal_cdf-1v1-normal-0.75": (1, 1, 0.4133),
    "1v1-additive-0.1": (1, 1, 1.7094), "1v1-additive-0.75": (1, 1, 0.3333),
    "1v1-bimodal-0.75": (1, 1, 0.4133), "wiggly-1v1-normal-0.75": (1, 1, 0.4133),
    "half_cube-1v1-normal-0.75": (1, 1, 0.4133), "student-identity-1-1-1": (1, 1, 0.2242),
    "asinh-student-identity-1-1-1": (1, 1, 0.2242), "swissroll_x-normal_cdf-1v1-normal-0.75": (2, 1, 0.4133),
    "multinormal-dense-2-2-0.5": (2, 2, 0.2939), "multinormal-dense-3-3-0.5": (3, 3, 0.4133),
    "multinormal-dense-5-5-0.5": (5, 5, 0.5928), "multinormal-dense-25-25-0.5": (25, 25, 1.2922),
    "multinormal-dense-50-50-0.5": (50, 50, 1.6243), "multinormal-sparse-2-2-2-2.0": (2, 2, 1.0217),
    "multinormal-sparse-3-3-2-2.0": (3, 3, 1.0217), "multinormal-sparse-5-5-2-2.0": (5, 5, 1.0217),
    "multinormal-sparse-25-25-2-2.0": (25, 25, 1.0217), "student-identity-2-2-1": (2, 2, 0.4319),
    "student-identity-2-2-2": (2, 2, 0.1931), "student-identity-3-3-2": (3, 3, 0.2909),
    "student-identity-3-3-3": (3, 3, 0.1787), "student-identity-5-5-2": (5, 5, 0.4482),
    "student-identity-5-5-3": (5, 5, 0.2985),
    "normal_cdf-multinormal-sparse-3-3-2-2.0": (3, 3, 1.0217), "normal_cdf-multinormal-sparse-5-5-2-2.0": (5, 5, 1.0217),
    "normal_cdf-multinormal-sparse-25-25-2-2.0": (25, 25, 1.0217), "half_cube-multinormal-sparse-3-3-2-2.0": (3, 3, 1.0217),
    "half_cube-multinormal-sparse-5-5-2-2.0": (5, 5, 1.0217), "half_cube-multinormal-sparse-25-25-2-2.0": (25, 25, 1.0217),
    "spiral-multinormal-sparse-3-3-2-2.0": (3, 3, 1.0217), "spiral-multinormal-sparse-5-5-2-2.0": (5, 5, 1.0217),
    "spiral-multinormal-sparse-25-25-2-2.0": (25, 25, 1.0217),
    "spiral-normal_cdf-multinormal-sparse-3-3-2-2.0": (3, 3, 1.0217),
    "spiral-normal_cdf-multinormal-sparse-5-5-2-2.0": (5, 5, 1.0217),
    "spiral-normal_cdf-multinormal-sparse-25-25-2-2.0": (25, 25, 1.0217),
    "asinh-student-identity-2-2-1": (2, 2, 0.4319), "asinh-student-identity-3-3-2": (3, 3, 0.2909),
    "asinh-student-identity-5-5-2": (5, 5, 0.4482),
}


def test_forty_tasks_with_published_ground_truth() -> None:
    ids = task_ids("beyond_normal")
    assert len(ids) == 40 and set(ids) == set(PUBLISHED)
    for tid, (dx, dy, mi) in PUBLISHED.items():
        task = get_task(tid)
        assert (task.dim_x, task.dim_y) == (dx, dy), tid
        assert abs(task.mutual_information - mi) < 1e-3, (tid, task.mutual_information)


@pytest.mark.parametrize("tid", sorted(PUBLISHED))
def test_samples_have_declared_shapes_and_are_reproducible(tid: str) -> None:
    task = get_task(tid)
    x, y = task.sample(64, seed=3)
    assert x.shape == (64, task.dim_x) and y.shape == (64, task.dim_y)
    assert x.dtype == torch.float32 and torch.isfinite(x).all() and torch.isfinite(y).all()
    x2, _ = task.sample(64, seed=3)
    assert torch.equal(x, x2)
    xd, _ = task.sample(8, seed=3, dtype=torch.float64)
    assert xd.dtype == torch.float64
    # every transformed task maps back to its base samples exactly
    bx, by = task.sample_base(64, seed=3)
    rx, ry = task.to_base(*task.sample(64, seed=3, dtype=torch.float64))
    torch.testing.assert_close(rx, bx, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ry, by, atol=1e-6, rtol=1e-6)


ELEMENTWISE = [tf.NORMAL_CDF, tf.HALF_CUBE, tf.ASINH, tf.WIGGLY_X, tf.WIGGLY_Y, tf.BIMODAL_X, tf.BIMODAL_Y]


@pytest.mark.parametrize("transform", ELEMENTWISE, ids=lambda t: t.name)
def test_elementwise_transforms_are_strictly_increasing_bijections(transform) -> None:
    grid = torch.linspace(-4, 4, 4001, dtype=torch.float64)[:, None]
    out = transform(grid)
    assert (out.diff(dim=0) > 0).all()  # strictly increasing: injective, MI-preserving
    torch.testing.assert_close(transform.inverse(out), grid, atol=1e-7, rtol=0)


def test_spiral_and_swissroll_are_injective_with_full_rank_jacobian() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    sp = tf.spiral((1, 2), 1 / 5)
    torch.testing.assert_close(sp.inverse(sp(x)), x)
    torch.testing.assert_close(sp(x).norm(dim=1), x.norm(dim=1))  # a norm-dependent rotation
    jac = torch.autograd.functional.jacobian(lambda v: sp(v[None])[0], x[0])
    assert abs(torch.linalg.det(jac).item()) > 1e-6
    u = torch.rand(200, 1, generator=gen, dtype=torch.float64)
    roll = tf.SWISSROLL(u)
    assert roll.shape == (200, 2)
    torch.testing.assert_close(tf.SWISSROLL.inverse(roll), u)


@pytest.mark.parametrize("tid", ["normal_cdf-1v1-normal-0.75", "wiggly-1v1-normal-0.75", "half_cube-1v1-normal-0.75",
                                 "1v1-bimodal-0.75", "asinh-student-identity-1-1-1"])
def test_one_dimensional_transforms_keep_mi(tid: str) -> None:
    # KSG on 1-d pairs is nearly invariant to monotone maps: transformed and base agree with truth
    task = get_task(tid)
    x, y = task.sample(5000, seed=1)
    assert abs(KSG().fit(x, y).estimate() - task.mutual_information) < 0.06


GAUSSIAN_BASED = [t for t in PUBLISHED if get_task(t).base_gaussian is not None]


@pytest.mark.parametrize("tid", GAUSSIAN_BASED)
def test_gaussian_based_samples_match_closed_form(tid: str) -> None:
    task = get_task(tid)
    x, y = task.to_base(*task.sample(200_000, seed=2, dtype=torch.float64))
    plug_in = GaussianMI().fit(x, y).estimate()
    assert abs(plug_in - task.mutual_information) < 0.01, (tid, plug_in)


def test_student_and_additive_samples_match_their_laws() -> None:
    from scipy import stats

    x, y = get_task("student-identity-1-1-1").sample_base(20000, seed=0)
    assert stats.kstest(x[:, 0].numpy(), stats.t(df=1).cdf).pvalue > 1e-3
    x, y = get_task("1v1-additive-0.1").sample_base(20000, seed=0)
    assert (x >= 0).all() and (x <= 1).all() and ((y - x).abs() <= 0.1).all()


def test_conditional_tasks_closed_form_and_oracle_estimate() -> None:
    tasks = conditional_tasks()
    assert len(tasks) >= 10
    assert {t.transform.name for t in tasks if t.transform is not None} == {"normal_cdf", "half_cube", "asinh"}
    task = get_task("cmi-gaussian-2-2-2-1.0")
    assert task.conditional_mutual_information == pytest.approx(2 * 0.5 * math.log(2), abs=1e-9)
    assert task.conditional_mutual_information < task.mutual_information
    x, y, c = task.sample(4000, seed=0)
    est = conditional_mutual_information(task.oracle(), x, {"y": y, "c": c}, {"c": c}, n_draws=32)
    truth = task.conditional_mutual_information
    assert abs(est.item() - truth) < max(3 * est.se.item(), 0.01 * truth)
    tx, ty, tc = get_task("asinh-cmi-gaussian-2-2-2-1.0").sample(4000, seed=0, dtype=torch.float64)
    torch.testing.assert_close(torch.sinh(tx), x.double(), atol=1e-5, rtol=1e-5)


def test_unknown_id_names_the_closest() -> None:
    with pytest.raises(UnknownTaskError, match="closest: 1v1-normal-0.75"):
        get_task("1v1-normal-0.7")
    with pytest.raises(ValueError, match="multinormal-dense-5-5-0.5"):
        get_task("multinormal-dense-5-5")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n": 0}, "positive integer"), ({"n": -3}, "positive integer"), ({"n": 2.5}, "positive integer"),
     ({"n": 4, "dtype": torch.int64}, "floating-point"), ({"n": 4, "device": "warp-drive"}, "device")],
)
def test_bad_sample_requests(kwargs, match) -> None:
    task = get_task("1v1-normal-0.75")
    with pytest.raises(ValueError, match=match):
        task.sample(**kwargs)
    with pytest.raises(ValueError, match=match):
        get_task("cmi-gaussian-1-1-1-0.5").sample(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")
def test_cuda_request_without_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_task("1v1-normal-0.75").sample(4, device="cuda")


def test_cli_lists_tasks_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infodecomp.tasks", "--list", "--json", "--kind", "beyond_normal"],
        capture_output=True, text=True, check=True,
    )
    rows = json.loads(out.stdout)
    assert len(rows) == 40
    assert rows[0] == {"id": "1v1-normal-0.75", "dim_x": 1, "dim_y": 1, "mutual_information": pytest.approx(0.41334, abs=1e-5)}
    table = subprocess.run([sys.executable, "-m", "infodecomp.tasks", "--list"], capture_output=True, text=True, check=True)
    assert "spiral-normal_cdf-multinormal-sparse-25-25-2-2.0" in table.stdout
