"""procinfo: the node's fixed mmap threshold (issue 19), set unless the user chose one."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "from lgseg_ros.procinfo import fix_mmap_threshold; print(fix_mmap_threshold())"


def _run(**env_extra) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    # A child process: the threshold is process-wide and not to be changed under the tests.
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


def test_fixed_unless_the_user_chose_a_threshold():
    assert _run() == ("True" if sys.platform.startswith("linux") else "False")
    assert _run(MALLOC_MMAP_THRESHOLD_="65536") == "False"
    assert _run(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536") == "False"
