"""The tutorials run end to end (tiny settings), so the docs never show code that does not work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "examples" / "tutorials").glob("*.py"))


def test_every_tutorial_is_in_the_docs():
    pages = "".join(p.read_text() for p in (ROOT / "docs" / "tutorials").glob("*.md"))
    assert TUTORIALS and all(f"examples/tutorials/{t.name}" in pages for t in TUTORIALS)


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(script):
    env = {**os.environ, "SPIKEIR_TUTORIAL_TINY": "1"}
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip()
