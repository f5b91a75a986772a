"""Lower layers never import higher ones (a static check of every module's imports)."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "infodecomp"

# low to high; a module may import its own layer or lower ones
LAYERS = {
    "interface": 0, "markers": 0, "diffusion": 1, "estimators": 2, "oracles": 3, "tasks": 3, "models": 4, "probes": 5,
    "plotting": 5, "evaluation": 6, "lightning": 7, "cli": 8, "analysis": 9,
}


def test_no_module_imports_a_higher_layer() -> None:
    seen, upward = set(), []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer not in LAYERS:
            continue
        seen.add(layer)
        for target in re.findall(r"^\s*(?:from|import) infodecomp\.(\w+)", path.read_text(), re.M):
            if LAYERS.get(target, -1) > LAYERS[layer]:
                upward.append(f"{path.relative_to(PACKAGE)} imports infodecomp.{target}")
    assert seen == set(LAYERS), f"layers without modules: {set(LAYERS) - seen}"
    assert not upward, upward
