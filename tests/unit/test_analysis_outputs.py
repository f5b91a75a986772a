"""Where analyses write and what ``--overwrite`` may replace (``infodecomp.analysis.common``),
and the escaping of markdown table cells; no model is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infodecomp.analysis.common import (
    AnalysisError,
    check_output,
    default_output,
    is_infodecomp_output,
    md_row,
    write_atomically,
)
from infodecomp.markers import MARKER, write_marker


def _fill(tmp: Path) -> str:
    (tmp / "report.json").write_text("{}")
    return "done"


def _tree(p: Path) -> dict[str, bytes]:
    return {str(q.relative_to(p)): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}


def _foreign(tmp_path: Path) -> dict[str, Path]:
    """What a user may point --out at that infodecomp did not write."""
    file = tmp_path / "notes.txt"
    file.write_text("my notes")
    folder = tmp_path / "thesis"
    (folder / "chapter").mkdir(parents=True)
    (folder / "chapter" / "1.tex").write_text("text")
    (folder / "report.json").write_text("{}")  # one report file alone is not a report
    ours = tmp_path / "ours"
    ours.mkdir()
    write_marker(ours, "infodecomp-analyze", subcommand="report")
    link = tmp_path / "link"
    link.symlink_to(ours, target_is_directory=True)
    return {"a regular file": file, "a directory of other files": folder, "a symbolic link": link}


@pytest.mark.parametrize("kind", ["a regular file", "a directory of other files", "a symbolic link"])
def test_overwrite_never_replaces_what_infodecomp_did_not_write(kind: str, tmp_path: Path) -> None:
    target = _foreign(tmp_path)[kind]
    before = _tree(target) if target.is_dir() else target.read_bytes()
    called: list[Path] = []
    for overwrite in (False, True):
        with pytest.raises(AnalysisError, match="did not write|symbolic link") as err:
            check_output(target, overwrite)
        assert "pass --overwrite" not in str(err.value)  # --overwrite would not help
        with pytest.raises(AnalysisError):
            write_atomically(target, called.append, subcommand="report", overwrite=overwrite)
    assert not called  # refused before any work
    assert target.is_symlink() == (kind == "a symbolic link")
    assert (_tree(target) if target.is_dir() else target.read_bytes()) == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_output_is_marked_and_only_a_marked_one_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "run"
    assert write_atomically(out, _fill, subcommand="heatmap") == "done"
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "infodecomp-analyze" and marker["subcommand"] == "heatmap"
    assert marker["version"] and re.match(r"\d{4}-\d\d-\d\dT", marker["time"])
    with pytest.raises(AnalysisError, match=r"holds an infodecomp report; pass --overwrite to replace it$"):
        check_output(out)
    (out / "old.png").write_text("x")
    write_atomically(out, _fill, subcommand="report", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.json"]
    assert json.loads((out / MARKER).read_text())["subcommand"] == "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_atomically(empty, _fill, subcommand="report")  # an empty directory is free
    assert (empty / "report.json").is_file()


def test_a_finished_report_from_before_the_marker_counts_as_infodecomp_output(tmp_path: Path) -> None:
    for files in (("report.json", "report.md", "information.png"), ("report.json", "summary.md")):
        old = tmp_path / "_".join(files)
        old.mkdir()
        for f in files:
            (old / f).write_text("x")
        assert is_infodecomp_output(old)
        with pytest.raises(AnalysisError, match="holds an infodecomp report"):
            check_output(old)
        write_atomically(old, _fill, subcommand="report", overwrite=True)  # `make demo` on an old directory
        assert (old / MARKER).is_file() and not (old / "report.md").exists()


@pytest.mark.parametrize(("where", "message"), [
    ("/proc/infodecomp-test/x", "is not writable"),
    ("FILE/sub", "is a file, not a directory"),
    ("FILE/sub/deeper", "is a file, not a directory"),
])
def test_an_output_that_cannot_be_created_is_one_error(where: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("keep")
    out = Path(where) if where.startswith("/") else tmp_path / where
    with pytest.raises(AnalysisError, match=message):
        check_output(out, overwrite=True)
    assert (tmp_path / "FILE").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_default_output_is_under_the_working_directory(tmp_path: Path) -> None:
    from infodecomp.analysis.probes import shipped_text_model

    shipped = shipped_text_model()
    assert default_output("reports", shipped) == Path("outputs/reports/shapes_text")
    assert default_output("reports", shipped / "last.ckpt") == Path("outputs/reports/shapes_text")
    run = tmp_path / "runs" / "pid" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("")
    assert default_output("pid", run) == Path("outputs/pid/pid-version_3")
    assert default_output("pid", run / "checkpoints" / "last.ckpt") == Path("outputs/pid/pid-version_3")
    assert default_output("reports", tmp_path / "runs" / "shapes") == Path("outputs/reports/shapes")


def _cells(row: str) -> list[str]:
    """The cells of a markdown table row, split as a renderer does: at pipes not escaped."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_markdown_cells_escape_pipes() -> None:
    assert _cells(md_row(["I(x; shape | rest)", 1.5, "ok"])) == [" I(x; shape \\| rest) ", " 1.5 ", " ok "]


def test_report_tables_keep_their_columns() -> None:
    from infodecomp.analysis.probes import render_summary
    from infodecomp.analysis.report import render_markdown

    row = {"name": "cmi/shape", "variable": "shape", "kind": "cmi", "estimator": "orthogonal", "estimate": 1.1,
           "se": 0.03, "truth": 1.0986, "rel_error": 0.01, "oracle_estimate": None, "gap": None, "flag": "ok"}
    pid_rows = [{"quantity": q, "estimate": 0.5, "se": 0.01} for q in
                ("i1", "i2", "i12", "redundancy", "unique1", "unique2", "synergy")]
    md = render_markdown({"checkpoint": "c", "model": "m", "n_eval": 8, "n_draws": 4, "seconds": 1.0,
                          "information": [row],
                          "pid": {"variables": ["shape", "colour"], "given": ["position"], "measure": "mmi",
                                  "rows": pid_rows, "n_eval": 8, "n_draws": 4, "nfe": 16}})
    atom = {"mean": 0.1, "se": 0.01}
    summary = render_summary({"probe": "pid", "n_items": 4, "settings": {"n_draws": 4}, "words": ["red", "circle"],
                              "given": "rest", "measure": "mmi", "atoms": {k: atom for k in
                              ("i1", "i2", "i12", "redundancy", "unique1", "unique2", "synergy")},
                              "nfe_per_image": 16, "seconds": 1.0})
    for text in (md, summary):
        tables = re.findall(r"((?:^\|.*\|\n)+)", text, re.M)
        assert len(tables) >= 2 if text is md else len(tables) >= 1
        for table in tables:
            rows = table.splitlines()
            assert all(len(_cells(r)) == len(_cells(rows[0])) for r in rows), table
    assert "| I(x; shape \\| rest) |" in md and "I(x; shape, colour \\| position)" in md
    assert "I(x; w1, w2 \\| c)" in summary


def test_a_training_run_is_never_replaced_by_an_analysis(tmp_path: Path) -> None:
    """A training run's directory is infodecomp's too (marked by infodecomp-train), but a report
    written over it would delete the checkpoints: never, not even with --overwrite."""
    run = tmp_path / "runs" / "shapes" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    write_marker(run, "infodecomp-train")
    (run / "report.json").write_text("{}")  # even beside files that look like a report
    (run / "report.md").write_text("")
    assert not is_infodecomp_output(run)
    for overwrite in (False, True):
        with pytest.raises(AnalysisError, match="is a training run's directory; an analysis never replaces it"):
            check_output(run, overwrite)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"weights"


def test_stop_if_terminated_exits_143_only_after_a_sigterm(capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    from infodecomp.analysis.common import STOPPED_BY_SIGTERM, stop_if_terminated

    stop_if_terminated(SimpleNamespace(received_sigterm=False, is_global_zero=True), "item 3")
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as stop:
        stop_if_terminated(SimpleNamespace(received_sigterm=True, is_global_zero=True), "item 3")
    assert stop.value.code == STOPPED_BY_SIGTERM == 143
    assert capsys.readouterr().err == "stopped by SIGTERM after item 3; the same command continues from there\n"
    with pytest.raises(SystemExit):  # other ranks stop too, silently
        stop_if_terminated(SimpleNamespace(received_sigterm=True, is_global_zero=False), "item 3")
    assert capsys.readouterr().err == ""
