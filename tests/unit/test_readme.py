"""The README's quickstart runs as written and prints what it promises."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_quickstart_snippet_runs() -> None:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    mi = namespace["mi"]
    assert abs(mi.item() - 0.4133) < 3 * mi.se.item()
    assert namespace["pointwise"].value.shape == (5000,)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("0.4") and "log-SNR [-12, 12]" in lines[0]
    assert "bits/dim" in lines[-1] and lines[-1].startswith("2.0")
