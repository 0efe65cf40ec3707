"""``benchmarks/knn_graph.py``'s footer names a size a reader can use."""

import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)),
                            "benchmarks"))
import knn_graph  # noqa: E402


def test_dense_matrix_size_in_its_unit():
    # 4 bytes x 2,000^2 = 16,000,000 B = 15.3 MiB (it printed "0 GiB")
    assert knn_graph._bytes(4 * 2000**2) == "15 MiB"
    assert knn_graph._bytes(4 * (10**6) ** 2) == "3,725 GiB"  # 10^6 items
    assert knn_graph._bytes(512) == "512 B"
    assert knn_graph._bytes(2048) == "2 KiB"
