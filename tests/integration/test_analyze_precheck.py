"""analyze.py input errors that need no model: one line on stderr, exit status 2, nothing created
or changed, and torch never imported (each case runs the CLI in a fresh interpreter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src" / "infodecomp" / "assets" / "shapes_text"
# the CLI as analyze.py runs it, then a check that the answer came before torch was imported
CODE = ("import sys; from infodecomp.analysis.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def _snapshot(root: Path) -> dict[str, object]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else p.is_symlink())
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A working directory holding things the user owns: a file, a folder, a link, a run."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "ch1.tex").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "thesis", target_is_directory=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_text("")
    return tmp_path


CASES = [
    # defect 1: --overwrite replaces only what infodecomp wrote
    (["report", "run", "--out", "notes.txt", "--overwrite"], "notes.txt is a file infodecomp did not write"),
    (["report", "run", "--out", "thesis", "--overwrite"], "thesis holds files infodecomp did not write"),
    (["report", "run", "--out", "thesis"], "thesis holds files infodecomp did not write and will not be replaced"),
    (["report", "run", "--out", "link", "--overwrite"], "link is a symbolic link"),
    (["pid", "run", "--variables", "a", "b", "--out", "thesis", "--overwrite"], "did not write"),
    (["heatmap", "--out", "thesis", "--overwrite"], "did not write"),
    (["compositional", "--out", "notes.txt", "--overwrite"], "did not write"),
    (["localize", "--out", "thesis", "--overwrite"], "did not write"),
    (["intervene", "--out", "link", "--overwrite"], "symbolic link"),
    # defect 4: abbreviations and options that act only with --model
    (["report", "run", "--n-ev", "4"], "unrecognized arguments: --n-ev 4"),
    (["pid", "--words", "1", "2", "--n-ite", "4"], "unrecognized arguments: --n-ite"),
    (["heatmap", "--ov"], "unrecognized arguments: --ov"),
    (["heatmap", "--image", "img.png", "--prompt", "a dog"], "--image and --prompt only apply to a pipeline given "
                                                             "with --model DIR"),
    (["intervene", "--word", "red"], "--word only applies to a pipeline given with --model DIR"),
    (["intervene", "--replacement", "blue"], "--replacement only applies"),
    (["localize", "--coco", "thesis", "--csv", "notes.txt"], "--coco and --csv only apply"),
    (["pid", "--words", "1", "2", "--prompt", "a red circle"], "--prompt only applies"),
    # defect 5: an output that cannot be created
    (["report", "run", "--out", "/proc/infodecomp-test/x"], "cannot create /proc/infodecomp-test/x: /proc is not "
                                                            "writable"),
    (["report", "run", "--out", "notes.txt/sub"], "cannot create notes.txt/sub: notes.txt is a file, not a "
                                                  "directory"),
    (["heatmap", "--out", "notes.txt/sub/deeper"], "notes.txt is a file, not a directory"),
    # defect 6: --n-draws, checked in one place for every subcommand
    (["report", "run", "--n-draws", "6"], "--n-draws must be a positive multiple of 4, got 6"),
    (["heatmap", "--n-draws", "2"], "--n-draws must be a positive multiple of 4, got 2"),
    (["pid", "--words", "1", "2", "--n-draws", "10"], "--n-draws must be a positive multiple of 4, got 10"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(args: list[str], message: str, place: Path) -> None:
    before = _snapshot(place)
    res = analyze(*args, cwd=place)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("analyze.py") and ": error: " in lines[0], res.stderr[-2000:]
    assert message in lines[0], lines[0]
    assert "holds an infodecomp report" not in lines[0]
    assert _snapshot(place) == before


def test_default_report_goes_under_the_working_directory(tmp_path: Path) -> None:
    """``report RUN`` on a run that lives elsewhere (here a copy of the model shipped inside the
    package) targets ./outputs/reports/<run name>; what is there decides before torch loads."""
    pkg = tmp_path / "site-packages" / "infodecomp" / "assets" / "shapes_text"
    pkg.mkdir(parents=True)
    for name in ("last.ckpt", "config.yaml"):
        shutil.copy(SHIPPED / name, pkg / name)
    work = tmp_path / "work"
    (work / "outputs" / "reports").mkdir(parents=True)
    (work / "outputs" / "reports" / "shapes_text").write_text("not a report")  # stops it before torch
    res = analyze("report", str(pkg), "--overwrite", "--n-eval", "2", "--n-draws", "4", "--n-heatmap", "1",
                  "--no-samples", cwd=work)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == ("analyze.py: error: outputs/reports/shapes_text is a file infodecomp did not "
                                  "write and will not be replaced; choose another --out")
    assert sorted(p.name for p in pkg.iterdir()) == ["config.yaml", "last.ckpt"]  # nothing beside the run


def test_help_says_n_draws_is_a_multiple_of_4(capsys) -> None:
    from infodecomp.analysis.cli import main

    for sub in ("report", "heatmap", "compositional", "localize", "intervene", "pid"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--n-draws N_DRAWS log-SNR draws per item: a positive multiple of 4" in text, sub


@pytest.mark.parametrize("how", ["script", "console"])
def test_messages_name_the_program_as_called(how: str, tmp_path: Path) -> None:
    """``python analyze.py`` answers as ``analyze.py``; the installed ``infodecomp-analyze`` as itself."""
    if how == "script":
        argv, name = [sys.executable, str(ROOT / "analyze.py")], "analyze.py"
    else:
        script = Path(sys.executable).parent / "infodecomp-analyze"
        if not script.is_file():
            pytest.skip("infodecomp-analyze is not installed next to this interpreter")
        argv, name = [str(script)], "infodecomp-analyze"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    res = subprocess.run([*argv, "report", "no-such-run"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"{name}: error: checkpoint or run directory not found: no-such-run"
    res = subprocess.run([*argv, "report", "no-such-run", "--n-ev", "4"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith(f"{name}: error: unrecognized arguments: --n-ev 4")
