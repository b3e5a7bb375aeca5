"""The one-command set-up is idempotent: a run over a ready venv changes nothing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_second_setup_run_reuses_everything():
    venv = Path(sys.prefix)
    if not (venv / ".lgseg-deps").exists():
        pytest.skip("not running inside a venv made by tools/setup_env.sh")
    env = dict(os.environ, LGSEG_VENV=str(venv))
    proc = subprocess.run(["bash", str(REPO / "tools" / "setup_env.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Python dependencies up to date" in proc.stdout
    assert "interfaces up to date" in proc.stdout
