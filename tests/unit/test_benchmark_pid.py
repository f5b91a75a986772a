"""``benchmarks/pid_worlds.py`` (reading PID reports of the four worlds) and ``benchmarks/pid.py`` (cost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fixtures import load_benchmark

_load = load_benchmark


def _report(root: Path, kind: str, estimates: dict[str, float], truth: dict[str, float]) -> Path:
    run = root / kind
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"init_args": {"kind": kind}}}))
    rows = [{"quantity": q, "estimate": estimates[q], "se": 0.01, "oracle": truth[q],
             "minus_oracle": estimates[q] - truth[q], "minus_oracle_se": 0.005, "truth": truth[q]} for q in truth]
    out = run / "pid"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"config": str(run / "config.yaml"), "checkpoint": "x.ckpt",
                                                 "pid": {"rows": rows, "measure": "pointwise-min", "n_eval": 8,
                                                         "n_draws": 4}}))
    return out


def test_pid_worlds_judges_each_atom_by_the_goal_and_plots(tmp_path: Path) -> None:
    bench = _load("pid_worlds")
    zero = {"i1": 0.0, "i2": 0.0, "i12": 0.693, "redundancy": 0.0, "unique1": 0.0, "unique2": 0.0, "synergy": 0.693}
    good = _report(tmp_path, "synergy", {**zero, "synergy": 0.65, "redundancy": 0.04}, zero)
    copy = {"i1": 0.693, "i2": 0.693, "i12": 1.386, "redundancy": 0.0, "unique1": 0.693, "unique2": 0.693,
            "synergy": 0.0}
    bad = _report(tmp_path, "copy", {**copy, "unique2": 0.6, "synergy": -0.06}, copy)
    out = bench.main([str(bad), str(good), "--plot", str(tmp_path / "fig.png"), "--json", str(tmp_path / "r.json")])
    assert [w["kind"] for w in out["worlds"]] == ["synergy", "copy"]  # in the order of the docs
    assert out["worlds"][0]["within"] == {"redundancy": True, "unique1": True, "unique2": True, "synergy": True}
    assert out["worlds"][1]["within"] == {"redundancy": True, "unique1": True, "unique2": False, "synergy": False}
    assert out["all_within"] is False
    assert (tmp_path / "fig.png").stat().st_size > 5000 and json.loads((tmp_path / "r.json").read_text())["worlds"]
    assert bench.within(0.05, 0.0) and not bench.within(-0.073, 0.693) and bench.within(-0.063, 0.693)
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "nothing")])


def test_pid_benchmark_quick_run_one_forward_and_identical_atoms(capsys) -> None:
    bench = _load("pid")
    r = bench.main(["--quick"])
    assert r["calls_per_image"]["one pass"] == r["calls_expected"]["one pass"] == 4 * r["n_draws"]
    assert r["calls_per_image"]["term by term"] == 9 * r["n_draws"]
    assert r["identical_atoms"] is True
    assert "identical atoms: True" in capsys.readouterr().out
