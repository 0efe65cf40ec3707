import collections
import csv
import os.path as osp
import re
import warnings

import numpy as np
import pytest
import torch
from tests.conftest import LFM2K_MODALITIES

from mde_pyg.data import read_mmrec


def write_folder(tmp_path, lines, features=None, name="toy"):
    (tmp_path / f"{name}.inter").write_text("\n".join(lines) + "\n")
    features = features if features is not None else {
        "image_feat.npy": np.ones((3, 4), dtype=np.float32),
        "text_feat.npy": np.ones((3, 2), dtype=np.float64),
    }
    for file, x in features.items():
        np.save(tmp_path / file, x)
    return str(tmp_path)


GOOD = ["userID\titemID\trating\ttimestamp\tx_label",
        "0\t0\t5\t1\t0", "0\t1\t4\t2\t0", "1\t2\t3\t3\t0",
        "1\t0\t1\t4\t1", "0\t2\t1\t5\t2", "2\t1\t1\t6\t2"]


def test_read_mmrec_layout(tmp_path):
    folder = write_folder(tmp_path, GOOD)
    with pytest.warns(UserWarning, match="dropped 1 valid/test"):
        data = read_mmrec(folder)
    assert data["user"].num_nodes == 3 and data["item"].num_nodes == 3
    assert data["item"].x_image.dtype == torch.float32
    assert data["item"].x_text.dtype == torch.float32  # from float64
    store = data["user", "rates", "item"]
    assert store.edge_index.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert store.val_edge_index.tolist() == [[1], [0]]
    # user 2 has no train item: its test row is dropped.
    assert store.test_edge_index.tolist() == [[0], [2]]
    rev = data["item", "rated_by", "user"].edge_index
    assert rev.tolist() == [[0, 1, 2], [0, 0, 1]]


def test_held_out_pairs_that_are_train_pairs_are_kept_with_a_warning(
        tmp_path):
    lines = GOOD[:4] + ["0\t0\t1\t4\t1",   # valid (0, 0) is a train pair
                        "0\t1\t1\t5\t2",   # test (0, 1) too
                        "1\t2\t1\t6\t2"]   # test (1, 2) too
    with pytest.warns(UserWarning) as record:
        data = read_mmrec(write_folder(tmp_path, lines))
    messages = [str(w.message) for w in record]
    assert any("1 valid interaction(s) are also train" in m for m in messages)
    assert any("2 test interaction(s) are also train" in m for m in messages)
    store = data["user", "rates", "item"]
    assert store.val_edge_index.tolist() == [[0], [0]]  # kept, as in MMRec
    assert store.test_edge_index.tolist() == [[0, 1], [1, 2]]


def count_inter(path):
    """Count an .inter file with the csv module: ids one past the largest
    user and item id, and the rows of each x_label, leaving out held-out
    rows of users without a train row (as read_mmrec drops them)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    train_users = {r["userID"] for r in rows if r["x_label"] == "0"}
    counts = collections.Counter(
        r["x_label"] for r in rows
        if r["x_label"] == "0" or r["userID"] in train_users)
    return {"users": 1 + max(int(r["userID"]) for r in rows),
            "items": 1 + max(int(r["itemID"]) for r in rows),
            "distinct_users": len({r["userID"] for r in rows}),
            "distinct_items": len({r["itemID"] for r in rows}),
            "train": counts["0"], "valid": counts["1"], "test": counts["2"]}


def test_lfm2k(lfm2k_path):
    data = read_mmrec(lfm2k_path, modalities=LFM2K_MODALITIES)
    counts = count_inter(osp.join(lfm2k_path, "lfm2k.inter"))
    store = data["user", "rates", "item"]
    assert data["item"].num_nodes == counts["items"]
    assert data["user"].num_nodes == counts["users"]
    assert store.edge_index.size(1) == counts["train"]
    assert store.val_edge_index.size(1) == counts["valid"]
    assert store.test_edge_index.size(1) == counts["test"]
    # Regression values, from count_inter on the shared lfm2k.inter (56,345
    # rows; every held-out row's user has train rows; ids 0..1857 and
    # 0..1424 all occur) and as ../shared/data/README.md states them.
    assert counts == {"users": 1858, "items": 1425, "distinct_users": 1858,
                      "distinct_items": 1425, "train": 44327,
                      "valid": 4799, "test": 7219}
    assert data["item"].x_text.shape == (1425, 384)
    assert data["item"].x_audio.shape == (1425, 128)
    assert data["item"].x_audio.dtype == torch.float32
    # The audio file is float64 on disk; the values survive the cast.
    raw = np.load(osp.join(lfm2k_path, "vggish.npy"))
    assert np.allclose(data["item"].x_audio.numpy(), raw, atol=1e-6)


@pytest.mark.parametrize("lines, match", [
    (["userID\titemID", "0\t0"], r"lacks the column\(s\) \['x_label'\]"),
    (["userID\titemID\tx_label", "0\tabc\t0"],
     r"line 2: column 'itemID' holds 'abc'"),
    (["userID\titemID\tx_label", "0\t0\t0", "0\t1\t7"],
     r"line 3: x_label 7 is not one of"),
    (["userID\titemID\tx_label", "0\t0\t0", "-1\t1\t0"],
     r"line 3: column 'userID' holds the negative id -1"),
    (["userID\titemID\tx_label", "0\t0\t1", "0\t1\t2"],
     r"no train interactions"),
    (["userID\titemID\tx_label", "0\t0 0"], r"line 2: 2 fields"),
    # blank lines are skipped but still counted
    (["userID\titemID\tx_label", "0\t0\t0", "", "", "0\tx\t0"],
     r"line 5: column 'itemID' holds 'x'"),
    (["userID\titemID\tx_label", "", "0\t0\t0", "0\t1"],
     r"line 4: 2 fields"),
    # a form feed inside a line does not end it
    (["userID\titemID\tx_label", "0\t0\t0 \x0c", "0\ty\t0"],
     r"line 3: column 'itemID' holds 'y'"),
])
def test_bad_inter(tmp_path, lines, match):
    folder = write_folder(tmp_path, lines, {
        "image_feat.npy": np.ones((2, 4)), "text_feat.npy": np.ones((2, 4))})
    with pytest.raises(ValueError, match=match):
        read_mmrec(folder)


def test_bad_features(tmp_path):
    folder = write_folder(tmp_path, GOOD, {
        "image_feat.npy": np.ones((2, 4)), "text_feat.npy": np.ones((3, 4))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="image_feat.npy has 2 rows but "
                           "the interactions name 3 items"):
            read_mmrec(folder)
        bad = np.ones((3, 4))
        bad[1, 2] = np.nan
        np.save(tmp_path / "image_feat.npy", bad)
        with pytest.raises(ValueError, match=r"image_feat.npy has 1 NaN or "
                           r"infinite value\(s\), the first in row 1 "):
            read_mmrec(folder)
        with pytest.raises(ValueError, match="missing.npy' does not exist"
                           rf".*; '{re.escape(str(folder))}' holds "
                           r"image_feat.npy, "
                           r"text_feat.npy$"):
            read_mmrec(folder, modalities={"image": "missing.npy"})


def test_inter_file_choice(tmp_path):
    write_folder(tmp_path, GOOD, name="a")
    write_folder(tmp_path, GOOD, name="b")
    with pytest.raises(ValueError, match="found several"):
        read_mmrec(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_mmrec(str(tmp_path), inter_file="b.inter")
    assert data["item"].num_nodes == 3
    with pytest.raises(ValueError, match="does not exist"):
        read_mmrec(str(tmp_path / "nowhere"))


def test_byte_order_mark(tmp_path):
    folder = write_folder(tmp_path, ["\ufeffuserID\titemID\tx_label",
                                     "0\t0\t0", "0\t1\t1", "0\t1\t2"], {
        "image_feat.npy": np.ones((2, 4)), "text_feat.npy": np.ones((2, 4))})
    data = read_mmrec(folder)
    assert data["user", "rates", "item"].edge_index.tolist() == [[0], [0]]


def test_read_mmrec_keeps_a_duplicate_interaction_once(tmp_path):
    # read_mmrec: "Duplicate interactions are kept once" (else degrees, BPR
    # sampling and the normalisation would count a repeated row twice)
    from mde_pyg.data.mmrec import RATES

    rows = [(0, 0, 0), (0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 0),
            (1, 0, 2), (1, 0, 2), (0, 2, 1)]
    (tmp_path / "d.inter").write_text("userID\titemID\tx_label\n" + "".join(
        f"{u}\t{i}\t{s}\n" for u, i, s in rows))
    np.save(tmp_path / "text.npy", np.ones((3, 2), np.float32))
    with warnings.catch_warnings():  # no held-out pair is a train pair
        warnings.simplefilter("error")
        data = read_mmrec(str(tmp_path), modalities={"text": "text.npy"})
    store = data[RATES]
    assert store.edge_index.tolist() == [[0, 0, 1], [0, 1, 1]]
    assert store.test_edge_index.tolist() == [[1], [0]]
    assert store.val_edge_index.tolist() == [[0], [2]]


def test_id_range_allows_at_most_twice_the_distinct_ids():
    # _check_id_range: "max id + 1 may exceed twice the number of distinct
    # ids only within ID_SLACK rows"
    from mde_pyg.data.mmrec import ID_SLACK, _check_id_range

    ids = np.arange(0, ID_SLACK + 3, 3)   # size ID_SLACK+1..3, 1/3 used
    line = np.arange(ids.size) + 2
    with pytest.raises(ValueError, match="would be unused"):
        _check_id_range(ids, "itemID", "f.inter", line)
    ok = np.arange(0, ID_SLACK + 2, 2)    # half used: allowed
    _check_id_range(ok, "itemID", "f.inter", np.arange(ok.size) + 2)


def test_inter_header_names_may_carry_spaces(tmp_path):
    # header names are stripped: "userID \t itemID" reads as userID, itemID
    from mde_pyg.data.mmrec import read_inter

    path = tmp_path / "d.inter"
    path.write_text("userID \t itemID\tx_label \n0\t1\t0\n")
    user, item, split = read_inter(str(path))
    assert (user.tolist(), item.tolist(), split.tolist()) == ([0], [1], [0])
