"""``benchmarks/baselines.py``: its bookkeeping (resume, shards, merge) and the flag summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import load_benchmark


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("baselines")


def test_summary_counts_errors_and_how_the_flags_split_them(bench) -> None:  # noqa: ANN001
    def row(task: str, estimate: float, flag: str = "ok", standard: float | None = None) -> dict:
        r = {"task": task, "estimator": "diffusion", "truth": 1.0, "estimate": estimate, "abs_error": abs(estimate - 1)}
        return {**r, "standard": estimate if standard is None else standard, "flag": flag}

    rows = [row("a", 1.05), row("b", 1.5, "model-inconsistent"), row("c", 0.7), row("d", 1.0, "not-converged", 0.8),
            {"task": "a", "estimator": "ksg", "truth": 1.0, "estimate": 0.9, "abs_error": 0.1}]
    s = bench.summary(rows)
    assert s["estimators"]["diffusion"] == {"tasks": 4, "mean_abs_error": pytest.approx(0.2125), "within_0.1": 2}
    assert s["estimators"]["diffusion (standard)"]["within_0.1"] == 1
    assert s["estimators"]["ksg"]["within_0.1"] == 1  # an error of exactly 0.1 counts as within
    assert s["flags"] == {"wrong_tasks": 2, "wrong_flagged": 1, "off_tasks": 2, "off_flagged": 1,
                          "right_tasks": 2, "right_flagged": 1,
                          "by_flag": {"ok": 2, "model-inconsistent": 1, "not-converged": 1}}


def test_shards_resume_and_merge(bench, tmp_path: Path) -> None:  # noqa: ANN001
    tasks = ["1v1-normal-0.75", "multinormal-dense-2-2-0.5", "1v1-additive-0.75"]
    common = ["--tasks", *tasks, "--estimators", "gaussian", "--plot", str(tmp_path / "p.png")]
    first = bench.main([*common, "--shard", "0/2", "--json", str(tmp_path / "0.json")])
    assert [r["task"] for r in first["rows"]] == [tasks[0], tasks[2]]
    again = bench.main([*common, "--shard", "0/2", "--json", str(tmp_path / "0.json"), "--resume"])
    assert again["rows"] == json.loads((tmp_path / "0.json").read_text())["rows"] == first["rows"]  # nothing re-run
    bench.main([*common, "--shard", "1/2", "--json", str(tmp_path / "1.json")])
    merged = bench.main(["--merge", str(tmp_path / "0.json"), str(tmp_path / "1.json"), "--json",
                         str(tmp_path / "all.json"), "--plot", str(tmp_path / "all.png")])
    assert sorted(r["task"] for r in merged["rows"]) == sorted(tasks) and (tmp_path / "all.png").stat().st_size > 0
    assert merged["summary"]["estimators"]["gaussian"]["tasks"] == 3
    with pytest.raises(SystemExit):
        bench.main(["--tasks", "no-such-task"])


def test_reflag_applies_the_current_rule_to_recorded_checks(bench) -> None:  # noqa: ANN001
    base = {"task": "t", "estimator": "diffusion", "truth": 1.0, "estimate": 1.0, "orthogonal_se": 0.02,
            "gap": -0.05, "gap_se": 0.01, "drift": 0.0, "flag": "model-inconsistent"}
    assert bench.reflag([base])[0]["flag"] == "ok"  # 5 SE, but it implies an error of 0.025, under the tolerance
    assert bench.reflag([{**base, "gap": -0.6, "gap_se": 0.05}])[0]["flag"] == "model-inconsistent"
    assert bench.reflag([{**base, "gap": 0.0, "drift": 0.25}])[0]["flag"] == "not-converged"
    # the k-NN check, recorded as "baseline" (rows written before it existed have none)
    assert bench.reflag([{**base, "gap": 0.0, "baseline": 1.5}])[0]["flag"] == "below-baseline"
    assert bench.reflag([{**base, "gap": 0.0, "baseline": 1.09}])[0]["flag"] == "ok"  # within the 0.1-nat cap
    assert bench.reflag([{**base, "gap": 0.0, "baseline": 1.15}])[0]["flag"] == "below-baseline"  # 20% would allow it
    # a k-NN estimate within 3 of the estimate's SEs says nothing, however far above the tolerance
    assert bench.reflag([{**base, "gap": 0.0, "orthogonal_se": 0.2, "baseline": 1.5}])[0]["flag"] == "ok"
    # no drift once the held-out loss has stopped improving (it would show the over-fitting that followed)
    assert bench.reflag([{**base, "gap": 0.0, "drift": 0.25, "settled": True}])[0]["flag"] == "ok"
    assert bench.reflag([{**base, "gap": 0.0, "drift": 0.25, "steps": 1700, "best_step": 900}])[0]["flag"] == "ok"
    assert bench.reflag([{**base, "gap": 0.0, "drift": 0.25, "steps": 1700, "best_step": 1700}])[0]["flag"] == "not-converged"
    # the network gained nothing over its Gaussian base on samples whose dependence is not Gaussian
    assert bench.reflag([{**base, "gap": 0.0, "base_gain": 0.0, "dependence_z": 9.0}])[0]["flag"] == "gaussian-only"
    assert bench.reflag([{**base, "gap": 0.0, "base_gain": 0.02, "dependence_z": 9.0}])[0]["flag"] == "ok"
    # once settled, the midpoint's rise from the selected model to the last one (rows from before: none)
    late = {**base, "gap": 0.0, "settled": True, "late_drift_se": 0.02}
    assert bench.reflag([{**late, "late_drift": 0.2}])[0]["flag"] == "still-learning"
    assert bench.reflag([{**late, "late_drift": -0.2}])[0]["flag"] == "ok"
    other = {"task": "t", "estimator": "ksg", "estimate": 1.0}
    assert bench.reflag([other]) == [other]


def test_tasks_with_identical_gaussian_scores_are_one_outcome(bench) -> None:  # noqa: ANN001
    """An increasing map of each column leaves the Gaussian scores, so the diffusion estimator's
    result, unchanged: the benchmark runs such a group once and counts it once among the distinct
    outcomes (and as often as it has tasks in the 40-task figures)."""
    tasks = ["1v1-normal-0.75", "normal_cdf-1v1-normal-0.75", "half_cube-1v1-normal-0.75", "multinormal-dense-2-2-0.5"]
    group = bench.preprocessing_groups(tasks, 500, seed=3)
    assert group == {tasks[0]: tasks[0], tasks[1]: tasks[0], tasks[2]: tasks[0], tasks[3]: tasks[3]}
    calls = []

    def fake(x, y, c=None):  # noqa: ANN001, ANN202
        calls.append(x.shape)
        return {"estimate": 0.5}

    rows = bench.run(tasks, ["ksg-copula"], {"ksg-copula": fake}, [], lambda rows: None, n=500, seed=3)
    assert len(calls) == 2 and [r.get("same_as") for r in rows] == [None, tasks[0], tasks[0], None]
    s = bench.summary(rows)
    assert s["estimators"]["ksg-copula"]["tasks"] == 4 and s["distinct"]["ksg-copula"]["tasks"] == 2
    assert s["distinct"]["ksg-copula"]["mean_abs_error"] == pytest.approx(
        (abs(0.5 - rows[0]["truth"]) + abs(0.5 - rows[3]["truth"])) / 2)
