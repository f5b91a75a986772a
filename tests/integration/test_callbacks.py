"""Each evaluation callback on a tiny module with CSVLogger(tmp_path); W&B offline files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from infodecomp.lightning import DiffusionModule, ShapesDataModule, VectorTaskDataModule
from infodecomp.lightning.callbacks import (
    InfoHeatmapCallback,
    LikelihoodCallback,
    MMSECurveCallback,
    MutualInformationCallback,
    SampleGridCallback,
)
from infodecomp.models import LabelledUNet, MLPBackbone


def tiny_shapes() -> tuple[DiffusionModule, ShapesDataModule]:
    dm = ShapesDataModule(size=16, n_train=64, n_val=32, batch_size=16, truth_samples=2000)
    backbone = LabelledUNet(attributes={"shape": 3, "colour": 3, "position": 4}, block_out_channels=(8, 16),
                            norm_num_groups=4)
    return DiffusionModule(backbone, cond_dropout=0.5), dm


def fit(module, dm, callbacks, tmp_path: Path, steps: int = 4, loggers=None):
    loggers = loggers or [CSVLogger(tmp_path, name="run")]
    trainer = pl.Trainer(max_steps=steps, logger=loggers, callbacks=callbacks, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accelerator="cpu")
    trainer.fit(module, dm)
    return trainer


def read_metrics(trainer: pl.Trainer) -> list[dict]:
    with open(Path(trainer.loggers[0].log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    assert values, f"{key} never logged"
    return values[-1]


def test_mutual_information_callback_logs_truth_error_and_oracle(tmp_path: Path) -> None:
    module, dm = tiny_shapes()
    cb = MutualInformationCallback(every_n_steps=2, n_eval=16, n_draws=8)
    trainer = fit(module, dm, [cb], tmp_path)
    rows = read_metrics(trainer)
    for v in ("shape", "colour", "position"):
        assert last_value(rows, f"val/mi/{v}") >= 0
        truth = last_value(rows, f"val/mi_true/{v}")
        assert truth == pytest.approx(dm.ground_truth().mutual_information[v])
        err = last_value(rows, f"val/mi_abs_error/{v}")
        assert err == pytest.approx(abs(last_value(rows, f"val/mi/{v}") - truth), rel=1e-4)
        assert last_value(rows, f"val/cmi/{v}") >= 0
        # the exact oracle on the same draws is close to the exact value: Monte-Carlo error is small
        assert abs(last_value(rows, f"val/mi_oracle/{v}") - truth) < 0.35
        # the standard estimator rides on the same draws, under its own keys
        assert last_value(rows, f"val/mi_standard_true/{v}") == pytest.approx(truth)
        std = last_value(rows, f"val/mi_standard/{v}")
        assert last_value(rows, f"val/mi_standard_abs_error/{v}") == pytest.approx(abs(std - truth), rel=1e-4)
        assert last_value(rows, f"val/mi_standard_se/{v}") > 0
        assert last_value(rows, f"val/mi_standard_oracle/{v}") != last_value(rows, f"val/mi_oracle/{v}")
        assert last_value(rows, f"val/mi_standard/{v}") != last_value(rows, f"val/mi/{v}")
    steps = sorted({int(r["step"]) for r in rows if r.get("val/mi/shape")})
    assert steps == [2, 4]  # every_n_steps, and at the end (step 4 counted once)
    assert [r["name"] for r in cb.final_rows][:2] == ["mi/shape", "cmi/shape"]
    assert {r["estimator"] for r in cb.final_rows} == {"orthogonal", "standard"}
    run = Path(trainer.loggers[0].log_dir)
    assert list((run / "figures").glob("val_information_step*.png"))
    table = json.loads(next((run / "tables").glob("val_information_table_step000004.json")).read_text())
    assert "oracle_estimate" in table["columns"]


def test_heatmap_callback_maps_and_mask_mass(tmp_path: Path) -> None:
    module, dm = tiny_shapes()
    cb = InfoHeatmapCallback(every_n_steps=0, n_eval=8, n_images=3, n_draws=8)
    trainer = fit(module, dm, [cb], tmp_path, steps=2)
    rows = read_metrics(trainer)
    for v in ("shape", "colour", "position"):
        mass = last_value(rows, f"val/heatmap_mass_in_mask/{v}")
        assert 0.0 <= mass <= 1.0
        assert 0.0 <= last_value(rows, f"val/heatmap_mass_in_mask_oracle/{v}") <= 1.0
    png = next((Path(trainer.loggers[0].log_dir) / "figures").glob("val_heatmap_cmi_step*.png"))
    assert png.stat().st_size > 5000


def test_mmse_likelihood_and_sample_callbacks(tmp_path: Path) -> None:
    module, dm = tiny_shapes()
    cbs = [MMSECurveCallback(every_n_steps=0, n_eval=4, n_points=5, n_eps=2),
           LikelihoodCallback(every_n_steps=0, n_eval=8, n_draws=8),
           SampleGridCallback(every_n_steps=0, n_rows=2, per_row=3, steps=4)]
    trainer = fit(module, dm, cbs, tmp_path, steps=2)
    run = Path(trainer.loggers[0].log_dir)
    table = json.loads(next((run / "tables").glob("val_mmse_table_step*.json")).read_text())
    assert table["columns"] == ["logsnr", "conditional", "unconditional", "gaussian_reference"]
    assert len(table["rows"]) == 5
    assert last_value(read_metrics(trainer), "val/nll_bpd") == pytest.approx(cbs[1].last[0])
    assert next(run.glob("figures/val_samples_step*.png")).stat().st_size > 3000
    assert next(run.glob("figures/val_mmse_curve_step*.png")).is_file()


def test_callbacks_on_vector_data_against_gaussian_oracle(tmp_path: Path) -> None:
    dm = VectorTaskDataModule("multinormal-dense-2-2-0.5", n_train=256, n_val=64, batch_size=64)
    module = DiffusionModule(MLPBackbone(2, vector_conditions={"y": 2}, hidden=32, depth=1))
    cb = MutualInformationCallback(every_n_steps=0, n_eval=64, n_draws=16)
    trainer = fit(module, dm, [cb, LikelihoodCallback(every_n_steps=0, n_eval=32, n_draws=8)], tmp_path, steps=2)
    row = cb.final_rows[0]
    assert row["truth"] == pytest.approx(0.2939, abs=1e-4)
    assert abs(row["oracle_estimate"] - row["truth"]) < 4 * row["oracle_se"] + 0.02
    assert last_value(read_metrics(trainer), "val/nll_bpd") > 0


def test_bad_callback_arguments() -> None:
    with pytest.raises(ValueError, match="n_eval"):
        MutualInformationCallback(n_eval=1)
    with pytest.raises(ValueError, match="estimators must be distinct"):
        MutualInformationCallback(estimators=("orthogonal", "classifier"))
    with pytest.raises(ValueError, match="every_n_steps"):
        MMSECurveCallback(every_n_steps=-1)
    with pytest.raises(ValueError, match="kind"):
        InfoHeatmapCallback(kind="pmi")


def test_unknown_variable_fails_at_setup(tmp_path: Path) -> None:
    module, dm = tiny_shapes()
    with pytest.raises(ValueError, match="texture"):
        fit(module, dm, [MutualInformationCallback(variables=["texture"])], tmp_path, steps=1)


def test_wandb_offline_run_has_keys_and_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from infodecomp.lightning import AutoWandbLogger

    module, dm = tiny_shapes()
    wb = AutoWandbLogger(save_dir=str(tmp_path / "wb"), project="test", name="cb")
    trainer = fit(module, dm, [MutualInformationCallback(every_n_steps=0, n_eval=8, n_draws=8),
                               InfoHeatmapCallback(every_n_steps=0, n_eval=4, n_images=2, n_draws=8)],
                  tmp_path, steps=2, loggers=[CSVLogger(tmp_path, name="run"), wb])
    wb.experiment.finish()
    run_dir = next((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    media = [str(p) for p in run_dir.rglob("*.png")]
    assert any("heatmap" in p for p in media) and any("information" in p for p in media)
    # offline runs keep history and summary in the run's protobuf log, keys in plain text
    records = next(run_dir.glob("run-*.wandb")).read_bytes()
    for key in ("val/mi/shape", "val/mi_true/colour", "val/cmi/position", "final/mi/shape",
                "val/heatmap_mass_in_mask/colour", "val/information_table"):
        assert key.encode() in records, key
    assert trainer.global_step == 2


def _train_cli(tmp: Path, devices: int) -> dict[str, float]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    logger = json.dumps([{"class_path": "pytorch_lightning.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp), "name": f"d{devices}"}}])
    cmd = [sys.executable, str(root / "train.py"), "--config", str(root / "configs/experiment/vector.yaml"),
           "--config", str(root / "configs/debug.yaml"), "--trainer.accelerator", "cpu",
           "--trainer.devices", str(devices), "--trainer.logger", logger, "--model.lr", "0.0",
           "--data.init_args.task", "multinormal-dense-2-2-0.5", "--data.init_args.n_train", "256",
           "--model.backbone.init_args.dim", "2", "--model.backbone.init_args.vector_conditions", '{"y": 2}']
    if devices > 1:
        cmd += ["--trainer.strategy", "ddp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = next(tmp.glob(f"d{devices}/version_*/metrics.csv"))
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    return {k: last_value(rows, k) for k in ("val/mi/y", "val/mi_se/y", "val/mi_oracle/y")}


@pytest.mark.slow  # long; runs in make test-all
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    # lr = 0: both runs evaluate the same (seeded) weights; the evaluation set is sharded
    # across the two processes and gathered, with draws tied to each item's index.
    one, two = _train_cli(tmp_path, 1), _train_cli(tmp_path, 2)
    assert abs(one["val/mi/y"] - two["val/mi/y"]) < max(one["val/mi_se/y"], 1e-6)
    assert two["val/mi/y"] == pytest.approx(one["val/mi/y"], rel=1e-4, abs=1e-6)
    assert two["val/mi_oracle/y"] == pytest.approx(one["val/mi_oracle/y"], rel=1e-4, abs=1e-6)


def test_tensorboard_logger_receives_figures(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger

    module, dm = tiny_shapes()
    trainer = fit(module, dm, [InfoHeatmapCallback(every_n_steps=0, n_eval=4, n_images=2, n_draws=8)], tmp_path,
                  steps=1, loggers=[TensorBoardLogger(tmp_path, name="tb")])
    events = list(Path(trainer.loggers[0].log_dir).glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 10_000  # the heatmap figure is in the event file
    assert list((Path(trainer.loggers[0].log_dir) / "figures").glob("*.png"))


def test_pid_callback_logs_atoms_oracle_truth_and_maps(tmp_path: Path) -> None:
    from infodecomp.lightning import PIDWorldDataModule
    from infodecomp.lightning.callbacks import PIDCallback

    dm = PIDWorldDataModule(kind="copy", n_train=64, n_val=32, batch_size=16, truth_samples=2000)
    module = DiffusionModule(LabelledUNet(attributes={"y1": 2, "y2": 2}, block_out_channels=(8, 16),
                                          norm_num_groups=4), cond_dropout=0.5)
    cb = PIDCallback(every_n_steps=0, n_eval=16, n_draws=8)
    trainer = fit(module, dm, [cb], tmp_path, steps=2)
    rows = read_metrics(trainer)
    truth = dm.world.exact_pid("pointwise-min", n=2000)
    for name in ("i1", "i2", "i12", "redundancy", "unique1", "unique2", "synergy"):
        assert last_value(rows, f"val/pid_true/{name}") == pytest.approx(truth[name])
        assert last_value(rows, f"val/pid_se/{name}") >= 0
    v = {n: last_value(rows, f"val/pid/{n}") for n in ("i1", "i2", "i12", "redundancy", "unique1", "unique2",
                                                      "synergy")}
    assert v["redundancy"] + v["unique1"] == pytest.approx(v["i1"], abs=1e-6)
    assert v["redundancy"] + v["unique1"] + v["unique2"] + v["synergy"] == pytest.approx(v["i12"], abs=1e-6)
    # the exact oracle on the same draws: the copy's two labels, each in its own square
    assert last_value(rows, "val/pid_oracle/redundancy") == pytest.approx(0.0, abs=1e-6)
    assert abs(last_value(rows, "val/pid_oracle/i12") - truth["i12"]) < 0.5
    assert 0.0 <= last_value(rows, "val/pid_mass/unique1/0") <= 1.0  # share of U1 in the left square
    run = Path(trainer.loggers[0].log_dir)
    assert next((run / "figures").glob("val_pid_maps_step*.png")).stat().st_size > 5000
    table = json.loads(next((run / "tables").glob("val_pid_table_step*.json")).read_text())
    assert table["columns"][:4] == ["quantity", "estimate", "se", "oracle"] and len(table["rows"]) == 7
    assert cb.result["pid"]["variables"] == ["y1", "y2"] and cb.result["pid"]["nfe"] == 4 * 8


def test_pid_callback_bad_arguments(tmp_path: Path) -> None:
    from infodecomp.lightning.callbacks import PIDCallback

    with pytest.raises(ValueError, match="two different variables"):
        PIDCallback(variables=["shape", "shape"])
    with pytest.raises(ValueError, match="measure must be one of"):
        PIDCallback(measure="i_min")
    module, dm = tiny_shapes()
    with pytest.raises(ValueError, match=r"variables \['size'\] are not model conditions"):
        fit(module, dm, [PIDCallback(variables=["shape", "size"], n_eval=4, n_draws=4)], tmp_path, steps=1)
