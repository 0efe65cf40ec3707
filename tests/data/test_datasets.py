import functools
import http.server
import os
import re
import threading
import zipfile

import numpy as np
import pytest
import torch

from mde_pyg.data import AmazonBaby, MMRecDataset, SyntheticMultiModal
from mde_pyg.data.synthetic import make_synthetic
from mde_pyg.transforms import MultiModalGraphs

INTER = "userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n1\t1\t0\n1\t2\t0\n" \
        "0\t2\t1\n1\t0\t2\n"


def make_raw(folder, name="toy"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write(INTER)
    rng = np.random.default_rng(0)
    np.save(os.path.join(folder, "image_feat.npy"), rng.normal(size=(3, 5)))
    np.save(os.path.join(folder, "text_feat.npy"), rng.normal(size=(3, 4)))


def test_mmrec_dataset_processes_and_caches(tmp_path):
    make_raw(tmp_path / "raw")
    ds = MMRecDataset(str(tmp_path), "toy",
                      pre_transform=MultiModalGraphs(k_user=2, k_item=1))
    data = ds[0]
    assert data["user", "rates", "item"].edge_index.size(1) == 4
    # k_item=1: every item has one neighbour, so every degree is 1 and
    # every weight 1/sqrt(1 * 1); the neighbour is the other item of the
    # highest cosine similarity (by hand from the raw features).
    for m in ("image", "text"):
        store = data["item", f"similar_{m}", "item"]
        assert store.edge_weight.tolist() == [1.0, 1.0, 1.0]
        raw = np.load(tmp_path / "raw" / f"{m}_feat.npy")
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        cos = unit @ unit.T
        np.fill_diagonal(cos, -np.inf)
        # edge_index is (neighbour, item); image: [1, 0, 1], text: [1, 2, 1]
        nbr, item = store.edge_index.tolist()
        assert sorted(item) == [0, 1, 2]
        assert dict(zip(item, nbr)) == dict(enumerate(cos.argmax(1)))
    # A second instance loads the processed file instead of re-reading raw.
    np.save(tmp_path / "raw" / "text_feat.npy", np.zeros((3, 4)))
    again = MMRecDataset(str(tmp_path), "toy",
                         pre_transform=MultiModalGraphs(k_user=2, k_item=1))
    assert torch.equal(again[0]["item"].x_text, data["item"].x_text)


def test_every_graph_setting_has_its_own_cache(tmp_path):
    # the cache file is named from the pre-transform's repr: a setting that
    # changes the graphs or features must not load another setting's file
    import warnings

    from mde_pyg.transforms import ItemKNNGraph, NormalizeFeatures

    make_raw(tmp_path / "raw")

    def load(transform):
        with warnings.catch_warnings():  # PyG: "pre_transform differs"
            warnings.simplefilter("ignore", UserWarning)
            return MMRecDataset(str(tmp_path), "toy",
                                pre_transform=transform)[0]

    def self_loops(data):
        ei = data["item", "similar_text", "item"].edge_index
        return int((ei[0] == ei[1]).sum())

    assert self_loops(load(MultiModalGraphs(k_user=2, k_item=1))) == 0
    assert self_loops(load(MultiModalGraphs(k_user=2, k_item=1,
                                            include_self=True))) == 3
    names = [repr(t) for t in (
        ItemKNNGraph(), ItemKNNGraph(include_self=True),
        ItemKNNGraph(precision="bf16"), ItemKNNGraph(modalities=["text"]),
        NormalizeFeatures("l2"), NormalizeFeatures("l2", ["text"]))]
    assert len(set(names)) == len(names)
    assert names[0] == "ItemKNNGraph(k=10)"  # defaults keep their old key
    assert names[4] == "NormalizeFeatures('l2')"
    l2_text = load(NormalizeFeatures("l2", ["text"]))
    raw_image = np.load(tmp_path / "raw" / "image_feat.npy")
    assert np.allclose(l2_text["item"].x_image.numpy(), raw_image,
                       atol=1e-6)  # left as read, not the all-modality file


def test_offline_error_names_files(tmp_path):
    with pytest.raises(RuntimeError, match=r"Place the files \['baby.inter', "
                       r"'image_feat.npy', 'text_feat.npy'\]"):
        AmazonBaby(str(tmp_path), url="http://127.0.0.1:9/baby.zip")
    assert not (tmp_path / "download.tmp").exists()
    assert list(tmp_path.iterdir()) == []  # the empty raw/ PyG made: gone
    root = tmp_path / "new" / "baby"
    with pytest.raises(RuntimeError, match="Could not download 'baby'"):
        AmazonBaby(str(root), url="http://127.0.0.1:9/baby.zip")
    assert list(tmp_path.iterdir()) == []  # root and its new parent too
    (tmp_path / "new" / "baby" / "raw").mkdir(parents=True)
    (tmp_path / "new" / "baby" / "raw" / "baby.inter").write_text("")
    with pytest.raises(RuntimeError, match="Could not download"):
        AmazonBaby(str(root), url="http://127.0.0.1:9/baby.zip")
    assert (root / "raw" / "baby.inter").exists()  # a user's file stays


def test_a_name_given_to_an_amazon_class_is_named(tmp_path):
    # AmazonBaby takes no name: the second argument is 'modalities'
    with pytest.raises(TypeError, match=re.escape(
            "'modalities' maps modality names to feature files, e.g. "
            "{'image': 'image_feat.npy', 'text': 'text_feat.npy'}, got str "
            "'baby' (the Amazon classes take no 'name': AmazonBaby(root))")):
        AmazonBaby(str(tmp_path), "baby")
    assert list(tmp_path.iterdir()) == []
    # with no URL set, the download's message says what to place, once
    with pytest.raises(RuntimeError) as info:
        MMRecDataset(str(tmp_path / "other"), "other")
    assert str(info.value).count("Place the files") == 1
    assert str(info.value).startswith(
        "Could not download 'other' (no download URL is set for 'other'). "
        "Place the files ['other.inter', 'image_feat.npy', 'text_feat.npy']")


def test_download_from_local_server(tmp_path):
    served = tmp_path / "served"
    make_raw(served / "baby", name="baby")
    with zipfile.ZipFile(served / "baby.zip", "w") as z:
        for f in os.listdir(served / "baby"):
            z.write(served / "baby" / f, f"baby/{f}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/baby.zip"
        ds = AmazonBaby(str(tmp_path / "root"), url=url)
    finally:
        server.shutdown()
    assert ds[0]["item"].num_nodes == 3
    assert sorted(os.listdir(tmp_path / "root" / "raw")) == [
        "baby.inter", "image_feat.npy", "text_feat.npy"]


def test_synthetic_is_seeded_and_planted():
    a = make_synthetic(50, 30, seed=3, interactions_per_user=6)
    b = make_synthetic(50, 30, seed=3, interactions_per_user=6)
    c = make_synthetic(50, 30, seed=4, interactions_per_user=6)
    store = a["user", "rates", "item"]
    assert torch.equal(store.edge_index, b["user", "rates", "item"].edge_index)
    assert not torch.equal(store.edge_index,
                           c["user", "rates", "item"].edge_index)
    total = sum(store[k].size(1) for k in
                ("edge_index", "val_edge_index", "test_edge_index"))
    assert total == 50 * 6
    # Every user keeps at least one train item.
    assert torch.unique(store.edge_index[0]).numel() == 50
    pref = a["user"].preference
    assert torch.allclose(pref.sum(1), torch.ones(50))
    assert torch.allclose(pref[0::3].max(1).values, torch.full((17,), 0.9))
    assert SyntheticMultiModal(20, 10, interactions_per_user=3)[0][
        "item"].x_image.shape == (10, 32)


def _item_sets(data):
    store = data["user", "rates", "item"]
    edges = torch.cat([store.edge_index, store.val_edge_index,
                       store.test_edge_index], 1)
    return {(int(u), int(i)) for u, i in edges.t()}


def test_synthetic_candidates_choose_by_the_same_model():
    # near-zero temperature: each user takes the top items of the choice
    # model, so drawing from all items as candidates gives the same sets
    kwargs = dict(interactions_per_user=5, temperature=1e-9, seed=1)
    exact = make_synthetic(40, 30, **kwargs)
    among_all = make_synthetic(40, 30, candidates=30, **kwargs)
    assert _item_sets(among_all) == _item_sets(exact)
    assert torch.equal(exact["item"].x_image, among_all["item"].x_image)


def test_synthetic_candidates_draw_distinct_items_and_reject_bad_sizes():
    data = make_synthetic(200, 1000, interactions_per_user=8, candidates=20,
                          seed=2)
    pairs = _item_sets(data)
    assert len(pairs) == 200 * 8  # no user picks an item twice
    assert {i for _, i in pairs} <= set(range(1000))
    with pytest.raises(ValueError, match="'candidates' must be in"):
        make_synthetic(20, 30, interactions_per_user=6, candidates=5)
    with pytest.raises(ValueError, match="'candidates' must be in"):
        make_synthetic(20, 30, interactions_per_user=6, candidates=31)


@pytest.mark.parametrize("size,high", [(5, 1000), (40, 50)])
def test_distinct_draws_are_distinct_and_uniform(size, high):
    from mde_pyg.data.synthetic import _distinct_draws
    rng = np.random.default_rng(0)
    out = _distinct_draws(rng, 4000, size, high)
    assert out.shape == (4000, size)
    assert all(len(set(row)) == size for row in out.tolist())
    counts = np.bincount(out.ravel(), minlength=high)
    expected = 4000 * size / high
    # every value about equally often (within 6 standard deviations)
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)


@pytest.mark.parametrize("per_user", [3, 4, 5, 6, 7])
def test_small_synthetic_users_have_every_split(per_user):
    # rounding left the valid (or test) split empty for 3-7 items per user
    data = make_synthetic(30, 40, interactions_per_user=per_user, seed=0)
    store = data["user", "rates", "item"]
    for split in (store.edge_index, store.val_edge_index,
                  store.test_edge_index):
        assert torch.bincount(split[0], minlength=30).min() >= 1
