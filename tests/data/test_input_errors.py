"""Bad input files and hand-built data get errors that name what to fix."""

import os
import re
import warnings

import numpy as np
import pytest
import torch
from tests.data.test_datasets import make_raw
from tests.data.test_mmrec import GOOD, write_folder
from torch_geometric.data import HeteroData

from mde_pyg.data import MMRecDataset, read_inter, read_mmrec
from mde_pyg.data.mmrec import ID_SLACK, check_data
from mde_pyg.transforms import (
    ItemKNNGraph,
    MultiModalGraphs,
    NormalizeUserItem,
)

# ---------------------------------------------------------------- (a) cache


def toy_dataset(root):
    return MMRecDataset(str(root), "toy",
                        pre_transform=MultiModalGraphs(k_user=2, k_item=1))


def processed_files(root):
    return sorted(os.listdir(root / "processed"))


def test_processed_file_is_saved_whole_or_not_at_all(tmp_path, monkeypatch):
    make_raw(tmp_path / "raw")

    def save_and_die(data_list, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt  # the run is killed mid-write

    monkeypatch.setattr(MMRecDataset, "save", staticmethod(save_and_die))
    with pytest.raises(KeyboardInterrupt):
        toy_dataset(tmp_path)
    assert processed_files(tmp_path) == []  # no partial file, no temp file
    monkeypatch.undo()
    data = toy_dataset(tmp_path)[0]
    assert data["user", "rates", "item"].edge_index.size(1) == 4
    assert processed_files(tmp_path) == [
        os.path.basename(toy_dataset(tmp_path).processed_paths[0]),
        "pre_filter.pt", "pre_transform.pt"]


@pytest.mark.parametrize("keep", [0, 10, 0.5])
def test_truncated_processed_file_is_rebuilt_with_a_warning(tmp_path, keep):
    make_raw(tmp_path / "raw")
    first = toy_dataset(tmp_path)
    path = first.processed_paths[0]
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:int(keep * len(raw)) if keep < 1 else keep])
    with pytest.warns(UserWarning, match=re.escape(
            f"The processed file '{path}' cannot be read (") + r".*\); "
            r"rebuilding it from the raw files in"):
        again = toy_dataset(tmp_path)
    assert torch.equal(again[0]["item"].x_text, first[0]["item"].x_text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy_dataset(tmp_path)  # the rebuilt file loads silently


def test_processed_file_unreadable_after_rebuilding_names_it(tmp_path,
                                                             monkeypatch):
    make_raw(tmp_path / "raw")
    path = toy_dataset(tmp_path).processed_paths[0]

    def broken_load(self, path, data_cls=None):
        raise RuntimeError("PytorchStreamReader failed reading zip archive")

    monkeypatch.setattr(MMRecDataset, "load", broken_load)
    with pytest.warns(UserWarning, match="rebuilding it"), \
            pytest.raises(ValueError, match=re.escape(
                f"The processed file '{path}' cannot be read (RuntimeError: "
                f"PytorchStreamReader failed reading zip archive); delete it "
                f"to rebuild it from the raw files")):
        toy_dataset(tmp_path)


def test_truncated_pre_transform_record_is_dropped(tmp_path):
    make_raw(tmp_path / "raw")
    toy_dataset(tmp_path)
    record = tmp_path / "processed" / "pre_transform.pt"
    record.write_bytes(record.read_bytes()[:7])
    with pytest.warns(UserWarning, match="Removing the unreadable .*"
                      "pre_transform.pt"):
        data = toy_dataset(tmp_path)[0]
    assert data["item"].num_nodes == 3
    assert not record.exists()  # only a record: PyG writes it on processing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy_dataset(tmp_path)


# ------------------------------------------------------- (d) and (e) .npy


def folder_with(tmp_path, file, write):
    folder = write_folder(tmp_path, GOOD)
    write(tmp_path / file)
    return folder


def write_npz(path):
    with open(path, "wb") as f:
        np.savez(f, feat=np.ones((3, 4)))


def write_pickled(path):
    np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)


def write_truncated(path):
    np.save(path, np.ones((3, 400)))
    path.write_bytes(path.read_bytes()[:500])


def write_header_only(path):
    np.save(path, np.ones((3, 4)))
    path.write_bytes(path.read_bytes()[:9])


@pytest.mark.parametrize("write, match", [
    (write_npz, r"bad.npy is a zip \(.npz\) archive \(holding the arrays "
                r"\['feat'\]\), not a .npy array; save the one feature "
                r"matrix alone with numpy.save"),
    (write_pickled, r"bad.npy holds a pickled object array, which is refused"),
    (write_truncated, r"bad.npy is truncated or corrupt \(Failed to read all "
                      r"data .*\); re-create it with numpy.save"),
    (write_header_only, r"bad.npy is truncated or corrupt \(.*\); re-create"),
    (lambda p: p.write_text("0.1,0.2\n0.3,0.4\n"),
     r"bad.npy is not a NumPy .npy file \(it starts with b'0.1,0.'"),
    (lambda p: p.write_bytes(b""), r"bad.npy is empty \(0 bytes\)"),
    (lambda p: np.save(p, np.ones((3, 4), dtype=np.complex64)),
     r"bad.npy has dtype complex64; expected real numbers"),
])
def test_bad_feature_file_is_named_with_what_is_wrong(tmp_path, write,
                                                      match):
    folder = folder_with(tmp_path, "bad.npy", write)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped valid/test row
        with pytest.raises(ValueError, match=match) as info:
            read_mmrec(folder, modalities={"image": "bad.npy"})
    assert str(tmp_path / "bad.npy") in str(info.value)  # the exact file


def test_values_beyond_float32_are_refused_after_the_cast(tmp_path):
    x = np.ones((3, 4))
    x[2, 1] = 1e39  # finite in float64, infinite in float32
    folder = folder_with(tmp_path, "big.npy", lambda p: np.save(p, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=re.escape(
                "big.npy has 1 value(s) too large for float32 (|x| > "
                "3.4e+38), the first in row 2 (itemID 2, column 1: 1e+39)")):
            read_mmrec(folder, modalities={"image": "big.npy"})
        x[0, 3] = np.nan
        x[1, 0] = -2e40
        np.save(tmp_path / "big.npy", x)
        with pytest.raises(ValueError, match=re.escape(
                "big.npy has 1 NaN or infinite value(s) and 2 value(s) too "
                "large for float32 (|x| > 3.4e+38), the first in row 0 "
                "(itemID 0, column 3: nan)")):
            read_mmrec(folder, modalities={"image": "big.npy"})
        x[0, 3], x[1, 0], x[2, 1] = 1.0, -3e38, 3e38  # large but in range
        np.save(tmp_path / "big.npy", x)
        data = read_mmrec(folder, modalities={"image": "big.npy"})
    assert data["item"].x_image[2, 1].item() == pytest.approx(3e38)
    assert torch.isfinite(data["item"].x_image).all()


# -------------------------------------------------------------- (f) ids


def write_inter(tmp_path, rows):
    path = tmp_path / "toy.inter"
    path.write_text("\n".join(["userID\titemID\tx_label"] + rows) + "\n")
    return str(path)


@pytest.mark.parametrize("rows, match", [
    (["0\t0\t0", "0\t99999999999999999999\t0"],
     r"line 3: column 'itemID' holds the id 99999999999999999999, which is "
     r"too large; ids must be 0-based indices below 2\*\*31"),
    (["0\t0\t0", "-99999999999999999999\t1\t0"],
     r"line 3: column 'userID' holds the id -99999999999999999999, which is "
     r"too large"),
    (["0\t0\t0", "1\t1\t0", "5000000000\t1\t0"],
     r"line 4: column 'userID' holds the id 5000000000, which is too large; "
     r"ids must be 0-based indices below 2\*\*31 that leave few gaps, as in "
     r"MMRec's format"),
    # below 2**31, but a table of 2e9 rows for 2 items
    (["0\t0\t0", "1\t2000000000\t0", "1\t0\t2"],
     r"line 3: column 'itemID' holds the id 2000000000, but only 2 distinct "
     r"ids appear, so 1999999999 of the 2000000001 rows of every table "
     r"would be unused; .* remap them first \(to 0..1\)"),
    ([f"{ID_SLACK}\t0\t0", "1\t1\t0"],
     rf"column 'userID' holds the id {ID_SLACK}, but only 2 distinct ids"),
])
def test_huge_or_sparse_ids_are_refused_before_any_table_is_sized(
        tmp_path, rows, match):
    path = write_inter(tmp_path, rows)
    with pytest.raises(ValueError, match=match) as info:
        read_inter(path)
    assert str(info.value).startswith(path)


def test_gaps_within_the_slack_are_kept(tmp_path):
    path = write_inter(tmp_path, ["0\t0\t0", f"{ID_SLACK - 1}\t1\t0"])
    user, item, split = read_inter(path)
    assert user.tolist() == [0, ID_SLACK - 1]
    assert item.tolist() == [0, 1] and split.tolist() == [0, 0]


# ------------------------------------------------- (i) hand-built data


def hand_data():
    """5 users, 6 items, two modalities: data as read_mmrec builds it."""
    data = HeteroData()
    data["user"].num_nodes = 5
    data["item"].num_nodes = 6
    gen = torch.Generator().manual_seed(0)
    data["item"].x_text = torch.randn(6, 4, generator=gen)
    data["item"].x_image = torch.randn(6, 3, generator=gen)
    user = torch.arange(5).repeat_interleave(2)
    item = torch.tensor([0, 1, 1, 2, 3, 4, 5, 0, 2, 5])
    store = data["user", "rates", "item"]
    store.edge_index = torch.stack([user, item])
    store.val_edge_index = torch.tensor([[0, 1], [2, 3]])
    store.test_edge_index = torch.tensor([[2, 3], [0, 1]])
    data["item", "rated_by", "user"].edge_index = store.edge_index.flip(0)
    return data


def graphs():
    return MultiModalGraphs(k_user=2, k_item=2)(hand_data())


def test_check_data_takes_the_last_ids_and_refuses_the_next():
    from mde_pyg.models import build_model

    data = graphs()
    rates = data["user", "rates", "item"].edge_index
    rates[0, 0], rates[1, 0] = 4, 5  # the last user and the last item
    rates[1, 9] = 3  # edge 9 was (4, 5): one edge per pair
    check_data(data)
    assert build_model("mde", data, embedding_dim=8).num_items == 6
    for row, node_type, num in ((0, "user", 5), (1, "item", 6)):
        bad = graphs()
        bad["user", "rates", "item"].edge_index[row, 0] = num  # one past
        with pytest.raises(ValueError, match=rf"names the {node_type} id "
                           rf"{num} \(row {row}, edge 0\), but "
                           rf"data\['{node_type}'\].num_nodes is {num}"):
            check_data(bad)


def short_text(data):
    data["item"].x_text = data["item"].x_text[:4]


def item_out_of_range(data):
    data["user", "rates", "item"].edge_index[1, 5] = 9


def negative_user(data):
    data["user", "rates", "item"].edge_index[0, 3] = -1


@pytest.mark.parametrize("corrupt, match", [
    (short_text, r"data\['item'\].x_text has 4 rows but data\['item'\]"
                 r".num_nodes is 6; row n must hold the features of item n"),
    (item_out_of_range,
     r"data\[\('user', 'rates', 'item'\)\].edge_index names the item id 9 "
     r"\(row 1, edge 5\), but data\['item'\].num_nodes is 6; ids must lie in "
     r"\[0, 6\)"),
    (negative_user,
     r"data\[\('user', 'rates', 'item'\)\].edge_index names the negative "
     r"user id -1 \(row 0, edge 3\); ids must be 0-based"),
    (lambda d: setattr(d["user", "rates", "item"], "test_edge_index",
                       torch.tensor([[7], [0]])),
     r"\.test_edge_index names the user id 7 \(row 0, edge 0\), but "
     r"data\['user'\].num_nodes is 5"),
    (lambda d: setattr(d["item"], "x_image", torch.ones(6, 3, dtype=int)),
     r"data\['item'\].x_image is a torch.int64 tensor of shape \(6, 3\); "
     r"expected a 2-D floating point \[num_items, dim\] matrix"),
    (lambda d: setattr(d["user", "rates", "item"], "edge_index",
                       d["user", "rates", "item"].edge_index.float()),
     r"edge_index is a torch.float32 tensor of shape \(2, 10\); expected a "
     r"\[2, E\] torch.long tensor"),
    (lambda d: d["item"].x_text.__setitem__((3, 1), float("nan")),
     r"data\['item'\].x_text has a NaN or infinite value in row 3 \(item "
     r"3\); fill or drop the missing features"),
    (lambda d: d["item"].x_image.__setitem__((5, 0), float("-inf")),
     r"data\['item'\].x_image has a NaN or infinite value in row 5"),
    # user 2 rated item 3 twice: edges 4 and 7 (item 0 -> 3)
    (lambda d: d["user", "rates", "item"].edge_index.__setitem__(
        (slice(None), 7), torch.tensor([2, 3])),
     r"data\[\('user', 'rates', 'item'\)\].edge_index holds the \(user, "
     r"item\) pair \(2, 3\) more than once \(edges 4 and 7\); keep one edge "
     r"per pair"),
    (lambda d: setattr(d["user", "rates", "item"], "val_edge_index",
                       torch.tensor([[0, 1, 0], [2, 3, 2]])),
     r"\.val_edge_index holds the \(user, item\) pair \(0, 2\) more than "
     r"once \(edges 0 and 2\)"),
    (lambda d: delattr(d["user"], "num_nodes"),
     r"data\['user'\].num_nodes is not set; set it to the number of users"),
    (lambda d: delattr(d["user", "rates", "item"], "edge_index"),
     r"data\[\('user', 'rates', 'item'\)\].edge_index is missing"),
])
def test_bad_hand_built_data_is_named_by_the_transforms(corrupt, match):
    data = hand_data()
    corrupt(data)
    with pytest.raises(ValueError, match=match):
        MultiModalGraphs(k_user=2, k_item=2)(data)


def test_short_features_are_named_by_the_knn_graph_alone():
    data = hand_data()
    short_text(data)
    with pytest.raises(ValueError, match=r"x_text has 4 rows but "
                       r"data\['item'\].num_nodes is 6"):
        ItemKNNGraph(k=2)(data)


@pytest.mark.parametrize("name", ["lightgcn", "vbpr", "mde", "freedom",
                                  "mostpop"])
@pytest.mark.parametrize("corrupt, match", [
    (short_text, r"x_text has 4 rows but data\['item'\].num_nodes is 6"),
    (item_out_of_range, r"names the item id 9 \(row 1, edge 5\)"),
    (lambda d: setattr(d["item", "similar_image", "item"], "edge_weight",
                       torch.ones(3)),
     r"data\[\('item', 'similar_image', 'item'\)\].edge_weight has shape "
     r"\(3,\) but edge_index has 12 edges; expected one weight per edge"),
    (lambda d: d["user", "co_occurs", "user"].edge_index.__setitem__(
        (0, 0), 5),
     r"data\[\('user', 'co_occurs', 'user'\)\].edge_index names the user id "
     r"5 \(row 0, edge 0\), but data\['user'\].num_nodes is 5"),
])
def test_bad_hand_built_data_is_named_before_a_model_is_built(name, corrupt,
                                                              match):
    from mde_pyg.models import build_model

    data = graphs()
    corrupt(data)
    with pytest.raises(ValueError, match=match):
        build_model(name, data)


def test_normalize_user_item_names_an_item_beyond_the_items():
    data = hand_data()
    data["user", "rates", "item"].edge_index[1, 0] = 6
    with pytest.raises(ValueError, match=r"item id 6 \(row 1, edge 0\)"):
        NormalizeUserItem()(data)


def test_repeated_pairs_are_looked_for_once_per_tensor_until_changed(
        monkeypatch):
    import mde_pyg.data.mmrec as mmrec

    calls = []
    check = mmrec._check_distinct_pairs
    monkeypatch.setattr(mmrec, "_check_distinct_pairs",
                        lambda *a, **k: calls.append(1) or check(*a, **k))
    data = hand_data()
    for _ in range(3):
        check_data(data)
    assert len(calls) == 3  # train, valid and test: one sort each
    # an edit in place is seen: the next check sorts that tensor again
    data["user", "rates", "item"].edge_index[:, 7] = torch.tensor([2, 3])
    with pytest.raises(ValueError, match=r"pair \(2, 3\) more than once"):
        check_data(data)
    assert len(calls) == 4
