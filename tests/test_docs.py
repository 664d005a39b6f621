"""The README's numbers are the ones its generating script prints from the committed eval.json files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_bundled_eval_json():
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py")], capture_output=True,
                             text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in printed.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) > 20
    stale = [line for line in lines if line not in readme]
    assert not stale, "README.md differs from scripts/readme_tables.py; paste its output:\n" + "\n".join(stale)
