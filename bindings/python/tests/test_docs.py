"""docs/python.md runs as written: its python blocks, in order, in one namespace, from the
repository root."""
import os
import re

from conftest import ROOT


def test_tutorial_runs(capsys):
    text = (ROOT / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 6
    ns = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for b in blocks:
            exec(compile(b, "docs/python.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "clean p =" in out and "intervened" in out and "CVENE_ERR" in out and "IIA after" in out
