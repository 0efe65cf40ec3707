"""mde_pyg.tune_cpu_allocator keeps freed blocks mapped for reuse."""

import subprocess
import sys

import pytest

from mde_pyg import tune_cpu_allocator

CHILD = """
import sys
import torch
from mde_pyg import tune_cpu_allocator

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "tuned":
    assert tune_cpu_allocator()
before = rss_mib()
x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
del x
print(rss_mib() - before)
"""


def _freed_kept_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="glibc mallopt is Linux-only")
def test_freed_block_stays_mapped_only_when_tuned():
    if not tune_cpu_allocator(1 << 30):
        pytest.skip("this C library has no glibc mallopt")
    # glibc's default returns a freed 64 MiB block to the OS at once ...
    assert _freed_kept_mib("system") < 8
    # ... the tuned allocator keeps it for the next allocation.
    assert _freed_kept_mib("tuned") > 56


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="'threshold'"):
        tune_cpu_allocator(2**31)
