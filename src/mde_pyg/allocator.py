"""Keep freed host memory for reuse instead of returning it to the OS.

glibc's ``malloc`` serves large blocks (above a threshold that grows to at
most 32 MiB) with ``mmap`` and hands them back with ``munmap`` when they are
freed. A training step allocates and frees the same large temporaries
every time (gathered feature rows, propagated embeddings, gradients), so
each step page-faults its memory in again, which can cost more than the
arithmetic. PyTorch's performance guide suggests an allocator that keeps
freed memory (jemalloc or tcmalloc through ``LD_PRELOAD``);
:func:`tune_cpu_allocator` gets the same effect from glibc itself, at run
time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(threshold: int = 1 << 30) -> bool:
    r"""Make glibc keep and reuse freed blocks below ``threshold`` bytes.

    Raises ``malloc``'s mmap threshold (blocks below it come from the heap)
    and its trim threshold (free heap memory below it stays with the
    process), so the large temporaries of a training step reuse memory
    already mapped instead of faulting fresh pages in at every step. At
    the Amazon Baby shape on a 2-core CPU this cuts a VBPR step by about
    40 %, BM3 and FREEDOM steps by about 20 % (``benchmarks/speed.py
    --system-malloc`` measures without it). The process keeps its peak
    memory mapped instead of returning it to the OS between steps.

    The ``mde-pyg`` command calls it (``--system-malloc`` skips it);
    library code never does, since it changes the whole process. Call it
    once at the start of your own training script.

    Args:
        threshold (int, optional): Bytes. (default: 1 GiB)

    Returns:
        :obj:`True` if glibc accepted both settings; :obj:`False` on other
        platforms or C libraries, where nothing changes.
    """
    if not 0 < threshold < 2**31:
        raise ValueError(f"'threshold' must be in (0, 2**31) bytes, got "
                         f"{threshold}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold))
