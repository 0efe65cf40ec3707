"""The devices tests run on: the CUDA cases are always collected, and
reported as skipped where no GPU is available (``-m cuda`` selects them)."""

import pytest
import torch

CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device")])

#: ``@pytest.mark.parametrize("device", DEVICES)``
DEVICES = ["cpu", CUDA]
