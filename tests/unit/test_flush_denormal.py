"""`flush_denormal`: subnormal floats count as zero in the CPU arithmetic of a job, worker threads included."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import compose_config

# In a fresh interpreter (as a CLI job): the mode is set before torch starts its worker threads, so a
# matmul split over two threads sees the subnormal inputs as zero; without the mode it does not.
SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from lightsweep.build import flush_denormal
    flush_denormal(sys.argv[1] == "true")
    torch.set_num_threads(2)
    x = torch.ones(4, 512, 512)
    g = torch.full((4, 512, 512), 1e-39)  # subnormal in float32
    print(float(torch.bmm(x, g).max()), float((g * 1).max()))
    """
)


def run(enabled: bool) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(enabled).lower()], capture_output=True, text=True, check=True
    ).stdout
    matmul, product = out.split()
    return float(matmul), float(product)


def test_a_job_with_flush_denormal_computes_subnormals_as_zero_on_every_thread():
    assert run(True) == (0.0, 0.0)
    matmul, product = run(False)
    assert matmul > 5e-37 and product > 0  # 512 x 1e-39, and 1e-39 itself


def test_off_by_default_and_on_for_the_optimizer_benchmark(tmp_path):
    assert compose_config([], tmp_path).flush_denormal is False
    assert compose_config(["experiment=optimizer_benchmark"], tmp_path).flush_denormal is True
