"""Every test runs under a time limit (pytest-timeout, pinned): a hang in the tracker, farm or board code
fails the run in minutes instead of holding CI until its 90-minute limit kills it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_has_a_time_limit_per_test_and_per_session(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 1800
    # A thread, not SIGALRM: a hang inside TVM's native socket code never returns to Python to take a signal.
    assert pytestconfig.getini("timeout_method") == "thread"
    assert 0 < float(pytestconfig.getini("session_timeout")) <= 90 * 60


def test_a_hanging_test_is_stopped_with_its_stack(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    t0 = time.monotonic()
    # The project's pytest configuration, with the limit lowered to 2 s.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-o", "timeout=2", "-p", "no:cacheprovider",
                           str(tmp_path / "test_hang.py")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "Timeout" in proc.stdout + proc.stderr and "time.sleep(600)" in proc.stdout + proc.stderr
