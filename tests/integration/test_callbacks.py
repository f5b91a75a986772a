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


def tiny_shapes(truth_samples: int = 2000) -> tuple[DiffusionModule, ShapesDataModule]:
    dm = ShapesDataModule(size=16, n_train=64, n_val=32, batch_size=16, truth_samples=truth_samples)
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


def test_mutual_information_callback_logs_truth_error_and_oracle(tmp_path: Path, caplog, monkeypatch) -> None:
    import infodecomp.evaluation as ev

    module, dm = tiny_shapes()
    cb = MutualInformationCallback(every_n_steps=2, n_eval=16, n_draws=8)
    # checks with no tolerance: every estimate with a standard-orthogonal gap is flagged
    monkeypatch.setattr(ev, "GAP_SES", 0.0)
    monkeypatch.setattr(ev, "TOLERANCE_ABS", 0.0)
    monkeypatch.setattr(ev, "TOLERANCE_REL", 0.0)
    with caplog.at_level("WARNING", logger="infodecomp.lightning.callbacks.mutual_information"):
        trainer = fit(module, dm, [cb], tmp_path)
    # twelve flags per evaluation (MI and CMI of three variables, two estimators) come as one line each
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("mutual_information")]
    assert [w.split(":")[0] for w in warnings] == ["step 2", "step 4"], warnings
    assert all(" 12 of 12 estimates flagged: I(x; shape) = " in w and "\n" not in w for w in warnings)
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
    assert "oracle_estimate" in table["columns"] and "drift_se" in table["columns"]
    # each quantity's curve over training (the charts' data), kept with the per-item values of the
    # last evaluations in the callback's state, so a resumed run keeps its curves and its drift test
    curve = cb.curves["mi/shape"]
    assert curve["step"] == [2, 4] and curve["estimate"] == cb.history["mi/shape"] and curve["se"][-1] > 0
    assert curve["truth"] == [pytest.approx(dm.ground_truth().mutual_information["shape"])] * 2
    assert curve["oracle"][-1] == pytest.approx(last_value(rows, "val/mi_oracle/shape"))
    assert [t.shape[0] for t in cb.items["mi/shape"]] == [16, 16]
    restored = MutualInformationCallback()
    restored.load_state_dict(cb.state_dict())
    assert restored.curves == cb.curves and restored.history == cb.history and len(restored.items["cmi/colour"]) == 2
    old = MutualInformationCallback()  # a checkpoint from before the curves: its history alone
    old.load_state_dict({"history": {"mi/shape": [0.1, 0.2]}})
    assert old.history["mi/shape"] == [0.1, 0.2] and old.curves == {} and old.items == {}
    assert (run / "figures" / "val_information_curves_step000004.png").stat().st_size > 5000


def test_heatmap_callback_maps_and_mask_mass(tmp_path: Path) -> None:
    module, dm = tiny_shapes()
    cb = InfoHeatmapCallback(every_n_steps=0, n_eval=8, n_images=3, n_draws=8)
    trainer = fit(module, dm, [cb], tmp_path, steps=2)
    rows = read_metrics(trainer)
    for v in ("shape", "colour", "position"):
        mass = last_value(rows, f"val/heatmap_mass_in_mask/{v}")
        assert 0.0 <= mass <= 1.0
        assert 0.0 <= last_value(rows, f"val/heatmap_mass_in_mask_oracle/{v}") <= 1.0
        assert -1.0 <= last_value(rows, f"val/heatmap_oracle_r/{v}") <= 1.0  # the map against the exact one
    assert set(cb.result["heatmaps"]["oracle_correlation"]) == {"shape", "colour", "position"}
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


def wandb_records(path: Path, timeout: float = 120.0) -> list:
    """The records of a run's ``.wandb`` file, once the file is complete.

    wandb 0.31 has no Python reader (its datastore module went with the Go core), so this reads
    the file's documented framing (a 7-byte ``:W&B`` header, then leveldb-log chunks of
    ``crc32 | length | type`` in 32 KiB blocks) and decodes each record with wandb's own protobuf
    class. The core writes the file asynchronously and may still be writing after ``finish()``
    returns (on a busy machine it once held only its header): the reader polls until the run's
    ``exit`` record, which the core writes last, is there, so no record is missed; a file that
    never completes fails after ``timeout`` seconds with what it held.
    """
    import struct
    import time
    import zlib

    from wandb.proto.wandb_internal_pb2 import Record

    def parse(data: bytes) -> list:
        assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0), data[:7]
        chunks, pos, pending = [], 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
                pos += 32768 - pos % 32768
                continue
            crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            body = data[pos + 7:pos + 7 + length]
            if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
                break  # a chunk still being written
            pos += 7 + length
            pending = body if kind in (1, 2) else pending + body
            if kind in (1, 4):  # full, or last of first/middle/last
                chunks.append(pending)
        records = []
        for c in chunks:
            r = Record()
            r.ParseFromString(c)
            records.append(r)
        return records

    deadline = time.monotonic() + timeout
    while True:
        records = parse(path.read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s: {len(records)} records"
        time.sleep(0.2)


def nest(items) -> dict:  # noqa: ANN001
    """History, summary or config items (a key, or a nested key path, and a JSON value) as a dict."""
    out: dict = {}
    for item in items:
        *parents, last = [item.key] if item.key else list(item.nested_key)
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = json.loads(item.value_json)
    return out


def test_wandb_offline_run_has_keys_and_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from infodecomp.lightning import AutoWandbLogger

    module, dm = tiny_shapes(truth_samples=300)  # the exact values need not be precise here
    wb = AutoWandbLogger(save_dir=str(tmp_path / "wb"), project="test", name="cb")
    trainer = fit(module, dm, [MutualInformationCallback(every_n_steps=1, n_eval=8, n_draws=8),
                               InfoHeatmapCallback(every_n_steps=0, n_eval=4, n_images=2, n_draws=8),
                               SampleGridCallback(every_n_steps=0, n_rows=2, per_row=2, steps=2)],
                  tmp_path, steps=2, loggers=[CSVLogger(tmp_path, name="run"), wb])
    wb.experiment.finish()
    assert trainer.global_step == 2
    run_dir = next((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    records = wandb_records(next(run_dir.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    history = [nest(r.history.item) for r in records if r.history.item]
    summary: dict = {}
    for r in records:
        summary.update(nest(r.summary.update))
    config = nest(i for r in records for i in r.config.update)

    # every val/* quantity plots against the trainer's step
    metrics = {(r.metric.name or r.metric.glob_name): r.metric.step_metric for r in records if kinds and r.metric.ByteSize()}
    assert metrics.get("trainer/global_step") == "" and metrics.get("val/*") == "trainer/global_step", metrics

    # scalars under their documented keys, each row at its trainer step
    logged = {k for h in history for k in h}
    for key in ("val/mi/shape", "val/mi_se/shape", "val/mi_true/colour", "val/mi_oracle/colour", "val/cmi/position",
                "val/heatmap_mass_in_mask/colour", "val/information_table"):
        assert key in logged, key
    assert sorted({h["trainer/global_step"] for h in history if "val/mi/shape" in h}) == [1, 2]

    # one chart per quantity (MI and CMI of each variable): W&B's built-in line-series spec, whose table
    # holds the estimate, its SE band, the exact value and the oracle at both evaluations
    panels = config["_wandb"]["visualize"]
    for v in ("shape", "colour", "position"):
        for kind in ("mi", "cmi"):
            spec = panels[f"charts/{kind}/{v}"]["panel_config"]
            assert spec["panelDefId"] == "wandb/lineseries/v0"
            assert spec["stringSettings"]["xname"] == "trainer/global_step"
            assert spec["stringSettings"]["title"].startswith("I(x; " + v)
            assert f"charts/{kind}/{v}_table" in summary
    last = [h for h in history if "charts/mi/shape_table" in h][-1]
    assert last["charts/mi/shape_table"]["_type"] == "table-file" and last["trainer/global_step"] == 2
    # the newest table: both evaluations, every series
    table = json.loads((run_dir / "files" / last["charts/mi/shape_table"]["path"]).read_text())
    assert {row[1] for row in table["data"]} == {"estimate", "estimate - SE", "estimate + SE", "exact",
                                                 "exact oracle, same draws"}
    assert {row[0] for row in table["data"]} == {1, 2}

    # the final numbers and each estimate's flag, readable, in the run summary
    for v in ("shape", "colour", "position"):
        for name in (f"mi/{v}", f"cmi/{v}", f"mi/{v}@standard"):
            assert isinstance(summary[f"final/{name}"], float)
            assert summary[f"final/{name}_se"] > 0
            assert summary[f"flag/{name}"] in ("ok", "model-inconsistent", "exceeds-bound", "below-baseline",
                                               "not-converged")
        assert summary[f"final/mi/{v}_true"] == pytest.approx(dm.ground_truth().mutual_information[v])
        assert f"final/mi/{v}_oracle" in summary

    # images whose captions name the step and what they show
    captions = {k: (h["trainer/global_step"], h[k]["caption"]) for h in history for k in h
                if isinstance(h[k], dict) and h[k].get("_type") == "image-file"}
    assert captions["val/heatmap/cmi"] == (2, "step 2: CMI maps of shape, colour, position (model, then exact oracle)")
    assert captions["val/samples"][1].startswith("step 2: samples conditioned on a ")
    assert captions["val/information"][1] == "step 2: information per variable (shape, colour, position)"
    assert captions["val/information_curves"][1].startswith("step 2: estimates over training of I(x; shape) (nats)")
    media = [str(p) for p in run_dir.rglob("*.png")]
    assert any("heatmap" in p for p in media) and any("information" in p for p in media)
    # the same curves as a local figure
    assert list((Path(trainer.loggers[0].log_dir) / "figures").glob("val_information_curves_step000002.png"))


def test_report_wandb_run_gets_the_training_runs_charts_and_summary(tmp_path: Path, monkeypatch) -> None:
    """``analyze.py report --wandb`` opens its run through AutoWandbLogger and publishes through the
    functions training uses: the same define_metric, ``final/...`` and ``flag/...`` summary, and
    charts of the training curves that metrics.csv holds."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from infodecomp.analysis.report import _publish_wandb
    from infodecomp.lightning import AutoWandbLogger

    wb = AutoWandbLogger(save_dir=str(tmp_path), project="test", name="report", job_type="analysis")
    info = [{"name": "mi/y", "estimate": 0.31, "se": 0.02, "truth": 0.29, "oracle_estimate": 0.3, "flag": "ok"},
            {"name": "mi/y@standard", "estimate": 0.5, "se": 0.03, "truth": 0.29, "oracle_estimate": 0.28,
             "flag": "not-converged"}]
    pid = [{"quantity": "synergy", "estimate": 0.1, "se": 0.01, "oracle": 0.12, "truth": None}]
    hist = {"val/mi/y": ([100, 200], [0.2, 0.31]), "val/mi_se/y": ([100, 200], [0.03, 0.02]),
            "val/mi_true/y": ([100, 200], [0.29, 0.29]), "val/mi_oracle/y": ([200], [0.3])}
    _publish_wandb(wb.experiment, {"information": info, "pid": {"rows": pid}}, hist)
    wb.experiment.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    records = wandb_records(next(run_dir.glob("run-*.wandb")))
    summary: dict = {}
    for r in records:
        summary.update(nest(r.summary.update))
    assert {r.metric.glob_name: r.metric.step_metric for r in records
            if r.WhichOneof("record_type") == "metric"}["val/*"] == "trainer/global_step"
    assert summary["final/mi/y"] == 0.31 and summary["final/mi/y_se"] == 0.02 and summary["final/mi/y_true"] == 0.29
    assert summary["flag/mi/y"] == "ok" and summary["flag/mi/y@standard"] == "not-converged"
    assert summary["final/pid/synergy"] == 0.1 and summary["final/pid/synergy_oracle"] == 0.12
    assert "final/pid/synergy_true" not in summary
    panel = nest(i for r in records for i in r.config.update)["_wandb"]["visualize"]["charts/mi/y"]["panel_config"]
    assert panel["panelDefId"] == "wandb/lineseries/v0" and panel["stringSettings"]["title"] == "I(x; y) (nats)"
    table = json.loads((run_dir / "files" / summary["charts/mi/y_table"]["path"]).read_text())
    assert sorted(map(tuple, table["data"])) == sorted([
        (100, "estimate", 0.2), (200, "estimate", 0.31), (100, "estimate - SE", 0.17), (200, "estimate - SE", 0.29),
        (100, "estimate + SE", 0.23), (200, "estimate + SE", 0.33), (100, "exact", 0.29), (200, "exact", 0.29),
        (200, "exact oracle, same draws", 0.3)])


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
    # each atom's curve over training, kept across a resume, and drawn at the end
    assert set(cb.curves) == {"i1", "i2", "i12", "redundancy", "unique1", "unique2", "synergy"}
    assert cb.curves["synergy"]["step"] == [2] and cb.curves["synergy"]["truth"] == [pytest.approx(truth["synergy"])]
    restored = PIDCallback()
    restored.load_state_dict(cb.state_dict())
    assert restored.curves == cb.curves
    assert next((run / "figures").glob("val_pid_curves_step000002.png")).stat().st_size > 5000


def test_pid_callback_bad_arguments(tmp_path: Path) -> None:
    from infodecomp.lightning.callbacks import PIDCallback

    with pytest.raises(ValueError, match="two different variables"):
        PIDCallback(variables=["shape", "shape"])
    with pytest.raises(ValueError, match="measure must be one of"):
        PIDCallback(measure="i_min")
    module, dm = tiny_shapes()
    with pytest.raises(ValueError, match=r"variables \['size'\] are not model conditions"):
        fit(module, dm, [PIDCallback(variables=["shape", "size"], n_eval=4, n_draws=4)], tmp_path, steps=1)
