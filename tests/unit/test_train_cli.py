"""train.py's command line: presets by name, the program's name, config errors before torch."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infodecomp import config_keys
from infodecomp.cli import CONFIGS, main, presets, resolve_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline"}


def test_presets_resolve_by_name_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside the clone: configs/... does not exist here
    vector = (CONFIGS / "experiment" / "vector.yaml").resolve()
    for name in ("experiment/vector", "experiment/vector.yaml", "configs/experiment/vector.yaml",
                 "some/clone/configs/experiment/vector.yaml"):
        assert resolve_config(name) == vector, name
    assert resolve_config("debug") == (CONFIGS / "debug.yaml").resolve()
    (tmp_path / "mine.yaml").write_text("trainer: {max_steps: 3}\n")
    assert resolve_config("mine.yaml") == Path("mine.yaml")  # a file that exists is used as it is
    assert "experiment/vector" in presets() and "debug" in presets()
    assert not any(p.startswith(("data/", "model/", "trainer/")) for p in presets())  # sections, not runs


def test_a_preset_by_name_runs_with_its_included_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The preset's relative includes (data: ../data/vector.yaml) resolve from another directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["--config", "experiment/vector", "--print_config"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "infodecomp.lightning.VectorTaskDataModule" in out and "infodecomp.models.MLPBackbone" in out
    assert "max_steps: 3000" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("preset", "channels", "readout", "steps"),
                         [("experiment/shapes", [16, 32], 128, 5000), ("experiment/shapes_unet", [32, 64], 0, 8000)])
def test_the_demo_model_and_the_unet_alone(preset: str, channels: list, readout: int, steps: int,
                                           capsys: pytest.CaptureFixture) -> None:
    """The default demo's UNet sits on a mixture readout; ``shapes_unet`` keeps the UNet alone."""
    import yaml

    with pytest.raises(SystemExit) as done:
        main(["--config", preset, "--print_config"])
    assert done.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    init = cfg["model"]["backbone"]["init_args"]
    assert (init["block_out_channels"], init["readout"], cfg["trainer"]["max_steps"]) == (channels, readout, steps)


def _run(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=60)


# the console script's wrapper (pip writes one like it), with argv[0] as an installed copy has it
CONSOLE = "import sys; sys.argv[0] = '/venv/bin/infodecomp-train'; from infodecomp.cli import main; sys.exit(main())"


def test_messages_name_the_program_as_called_and_list_the_presets(tmp_path: Path) -> None:
    res = _run(CONSOLE, "--config", "configs/experiment/vectr.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("infodecomp-train: error: config file not found: configs/experiment/vectr.yaml; presets")
    assert "experiment/vector" in res.stderr and res.stderr.count("\n") == 1
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "nope"], capture_output=True, text=True,
                         cwd=tmp_path, env=ENV, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("train.py: error: config file not found: nope; presets")
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_program_and_lists_the_presets(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/infodecomp-train", "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: infodecomp-train ")
    assert "presets (--config NAME, from any directory)" in out and "experiment/vector" in " ".join(out.split())


BAD_CONFIGS = {  # file text -> what the one line says
    "trainer:\n  max_steps: [3\n": "bad.yaml: YAML syntax error at line 3, column 1",
    "": "bad.yaml is empty: expected a YAML mapping with sections such as trainer, model, data",
    "# only a comment\n": "bad.yaml is empty",
    "- trainer\n- model\n": "bad.yaml holds a list, not a mapping",
    "trainer: {max_steps: 3}\nmodle: {lr: 0.1}\n": "bad.yaml: unknown key 'modle' (did you mean 'model'?); allowed: "
                                                   "seed_everything, trainer, model, data",
    "trainer:\n  max_stepz: 3\n": "bad.yaml: trainer: unknown key 'max_stepz' (did you mean 'max_steps'?)",
    "model:\n  lrr: 0.1\n": "bad.yaml: model: unknown key 'lrr' (did you mean 'lr'?)",
    "model: section.yaml\n": "section.yaml: model: unknown key 'learning_rate'",  # an included file
    "data: broken.yaml\n": "broken.yaml: YAML syntax error at line 2",
    "trainer:\n  logger:\n    - init_args: {save_dir: afile/runs}\n":
        "bad.yaml: output directory afile/runs cannot be made: afile is a file, not a directory",
}

BAD_OPTIONS = {
    ("--trainer.max_step", "50"): "unrecognized arguments: --trainer.max_step (did you mean --trainer.max_steps?)",
    ("--trainer.max_stepz=50",): "unrecognized arguments: --trainer.max_stepz=50",
    ("--model.lrr", "1"): "unrecognized arguments: --model.lrr (did you mean --model.lr?)",
    ("--seed_every", "3"): "unrecognized arguments: --seed_every (did you mean --seed_everything?)",
    ("--trainer", "trainer.yaml"): "trainer.yaml: trainer: unknown key 'max_stepz'",
    ("--trainer.default_root_dir", "afile"): "output directory afile cannot be made: afile is a file",
    ("--trainer.logger.init_args.save_dir", "afile/x"): "output directory afile/x cannot be made: afile is a file",
    ("--trainer.callbacks", '[{"init_args": {"dirpath": "afile/ckpt"}}]'): "output directory afile/ckpt cannot be made",
}

# every case in one interpreter: status, stderr, and whether torch was imported to answer
CHECK = """
import contextlib, io, json, sys
from infodecomp.cli import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    out.append([rc, err.getvalue(), "torch" in sys.modules])
print(json.dumps(out))
"""


def test_config_and_option_errors_answer_in_one_line_before_torch_loads(tmp_path: Path) -> None:
    (tmp_path / "section.yaml").write_text("learning_rate: 0.1\n")
    (tmp_path / "broken.yaml").write_text("class_path: [x\n")
    (tmp_path / "trainer.yaml").write_text("max_stepz: 3\n")
    (tmp_path / "afile").write_text("not a directory\n")
    cases = []
    for i, (text, message) in enumerate(BAD_CONFIGS.items()):
        (tmp_path / f"c{i}").mkdir()
        (tmp_path / f"c{i}" / "bad.yaml").write_text(text)
        for name in ("section.yaml", "broken.yaml"):
            (tmp_path / f"c{i}" / name).write_text((tmp_path / name).read_text())
        cases.append(([f"--config=c{i}/bad.yaml"] if i % 2 else ["--config", f"c{i}/bad.yaml"], message))
    cases += [(list(args), message) for args, message in BAD_OPTIONS.items()]
    before = sorted(tmp_path.rglob("*"))
    res = _run(CHECK, json.dumps([args for args, _ in cases]), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for (args, message), (rc, err, torch_loaded) in zip(cases, json.loads(res.stdout), strict=True):
        assert rc == 2 and err.startswith("train.py: error: ") and err.count("\n") == 1, (args, err)
        assert message in err, (args, err)
        assert not torch_loaded, args
    assert sorted(tmp_path.rglob("*")) == before


def test_the_allowed_keys_are_those_of_the_trainer_and_the_module() -> None:
    """config_keys is a static copy (precheck must not import torch): it must not fall behind."""
    import pytorch_lightning as pl

    from infodecomp.lightning.module import DiffusionModule

    def params(f: object) -> list[str]:
        return [p for p in inspect.signature(f).parameters if p != "self"]

    assert list(config_keys.TRAINER_KEYS) == params(pl.Trainer.__init__)
    assert list(config_keys.MODEL_KEYS) == params(DiffusionModule.__init__)


def test_the_top_level_options_are_the_parsers() -> None:
    from infodecomp.cli import _make_cli_class

    class Built(Exception):
        pass

    class Probe(_make_cli_class()):
        def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - stop once the parser is built
            raise Built(parser)

    import pytorch_lightning as pl

    from infodecomp.lightning.module import DiffusionModule

    with pytest.raises(Built) as built:
        Probe(DiffusionModule, pl.LightningDataModule, subclass_mode_data=True, run=False, args=[])
    parser = built.value.args[0]
    heads = {a.dest.split(".")[0] for a in parser._actions}
    assert heads == set(config_keys.TOP_LEVEL_OPTIONS)
    assert set(config_keys.TOP_LEVEL_KEYS) == heads - {"config", "print_config", "help"}


def test_abbreviated_options_are_rejected_by_the_parser_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_main (the API; main's precheck catches this sooner) takes no abbreviation either."""
    from jsonargparse import ArgumentError

    from infodecomp.cli import train_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError, match="unrecognized arguments: --trainer.max_step 50"):
        train_main(["--config", str(CONFIGS / "debug.yaml"), "--trainer.max_step", "50", "--print_config"])
    assert list(tmp_path.iterdir()) == []


def test_a_step_budgeted_run_shows_steps_against_max_steps(tmp_path: Path) -> None:
    """Lightning's bar read ``Epoch 0/-2 … 300/49`` for a run with max_steps and no max_epochs."""
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel

    from infodecomp.lightning import StepProgressBar

    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            task = trainer.progress_bar_callback.train_progress_bar
            seen.append((task.description.strip(), task.completed, task.total))

    trainer = pl.Trainer(max_steps=5, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[StepProgressBar(), Spy()])
    trainer.fit(BoringModel())
    assert seen == [("Epoch 0 (steps)", 1, 5), ("Epoch 0 (steps)", 2, 5), ("Epoch 1 (steps)", 3, 5),
                    ("Epoch 1 (steps)", 4, 5), ("Epoch 2 (steps)", 5, 5)]  # three epochs of 2, 2 and 1 steps
