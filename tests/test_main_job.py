"""`python -m pointwise_cuda`: the 190x190x512 -> 10 reduction, checked against F.conv2d and timed."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("layout", [[], ["--channels-last"]], ids=["nchw", "channels_last"])
def test_main_job_runs_checks_and_times(layout):
    result = subprocess.run(
        [sys.executable, "-m", "pointwise_cuda", "--device", "cpu", "--batch", "1", *layout],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(1, 512, 190, 190)" in out and "(1, 10, 190, 190)" in out
    assert "5,130 parameters" in out
    assert "51.2x less activation memory" in out
    assert "relative error" in out and " OK" in out
    assert "F.conv2d" in out and "pointwise_cuda" in out and "speedup" in out
