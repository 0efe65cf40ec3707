"""mde-pyg: MDE, SAND and multi-modal recommenders for PyTorch Geometric."""

from mde_pyg.allocator import tune_cpu_allocator

__version__ = "0.1.0"

__all__ = ["__version__", "tune_cpu_allocator"]
