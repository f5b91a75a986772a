"""The top level the project's design promises, and the data/ folder that local datasets go in."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("pyproject.toml", "README.md", "src", "configs", "tests", "data", "train.py", "analyze.py")


def test_top_level_of_the_design_is_there() -> None:
    missing = [name for name in TOP_LEVEL if not (ROOT / name).exists()]
    assert not missing, f"the top level lacks {missing}"


def _config_data_roots() -> set[str]:
    """Every default dataset root under data/ that a shipped data config names."""
    roots = set()
    for path in (ROOT / "configs" / "data").glob("*.yaml"):
        args = (yaml.safe_load(path.read_text()) or {}).get("init_args") or {}
        root = args.get("root")
        if isinstance(root, str) and root.startswith("data/"):
            roots.add(root)
    return roots


def test_data_readme_names_every_default_dataset_root() -> None:
    text = (ROOT / "data" / "README.md").read_text()
    roots = _config_data_roots()
    assert {"data/cifar10", "data/my_captioned_images"} <= roots  # the configs this test is about
    for root in roots:
        assert f"`{root}/" in text, f"data/README.md does not say what goes in {root}"
    for needed in ("cifar-10-batches-py", "batches.meta", "captions.csv", "--aro", "--coco", "--csv"):
        assert needed in text


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_data_contents_are_ignored_but_its_readme_is_not() -> None:
    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0

    assert ignored("data/cifar10/cifar-10-batches-py/data_batch_1")
    assert ignored("data/my_captioned_images/captions.csv")
    assert not ignored("data/README.md")
