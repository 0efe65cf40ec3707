"""The README's Python snippets run as written and compute what the text
says they compute."""

import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def readme_blocks() -> list[str]:
    with open(osp.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def block(first_line: str) -> str:
    found = [b for b in readme_blocks() if b.startswith(first_line)]
    assert len(found) == 1, f"no single README block starts {first_line!r}"
    return found[0]


def test_data_snippet(lfm2k_path):
    code = block("from mde_pyg.data import read_mmrec").replace(
        '"path/to/lfm2k"', repr(lfm2k_path))
    scope: dict = {}
    exec(code, scope)
    data = scope["data"]
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    # the graphs the comment names, with the sizes k_user / k_item say
    co = data["user", "co_occurs", "user"].edge_index
    assert int(torch.bincount(co[1], minlength=num_users).max()) <= 40
    for m in ("text", "audio"):
        knn = data["item", f"similar_{m}", "item"].edge_index
        assert torch.equal(torch.bincount(knn[1], minlength=num_items),
                           torch.full((num_items,), 10))
    # the model inputs: z-scored columns (population std), then unit rows,
    # VGGish's raw values (up to 246) gone; the kNN graphs from the raw
    # features
    raw = torch.from_numpy(np.load(osp.join(lfm2k_path, "vggish.npy")))
    z = (raw - raw.mean(0)) / raw.std(0, correction=0)
    assert torch.allclose(data["item"].x_audio.double(),
                          F.normalize(z, dim=1), atol=1e-5)
    assert raw.abs().max() > 200
    cos = F.normalize(raw, dim=1) @ F.normalize(raw, dim=1).t()
    cos.fill_diagonal_(-2)
    knn = data["item", "similar_audio", "item"].edge_index
    for i in (0, 700, num_items - 1):
        assert set(knn[0, knn[1] == i].tolist()) == set(
            cos[i].topk(10).indices.tolist())
    weight = data["user", "rates", "item"].edge_weight
    user, item = data["user", "rates", "item"].edge_index
    du = torch.bincount(user, minlength=num_users).float()
    di = torch.bincount(item, minlength=num_items).float()
    assert torch.allclose(weight, (du[user] * di[item]).rsqrt())


def test_layers_and_losses_snippet():
    torch.manual_seed(0)
    scope: dict = {}
    exec(block("import torch\nfrom mde_pyg.nn import"), scope)
    items, pos, neg = scope["items"], scope["pos"], scope["neg"]
    x_img, x_txt = scope["x_img"][items], scope["x_txt"][items]

    # Eq. 5 at its initialisation (W = 0): equal preferences, concat fusion
    # of the batch's rows
    pref = scope["pref"]
    assert torch.allclose(pref, torch.full((32, 2), 0.5))
    assert torch.allclose(scope["fused"],
                          torch.cat([0.5 * x_img, 0.5 * x_txt], -1))
    # Eq. 8 with equal preferences: no gap, so w_d = 0 and w_a = 1
    assert torch.allclose(scope["w_d"], torch.zeros(32))
    assert torch.allclose(scope["w_a"], torch.ones(32))
    # so the loss is BPR plus 0.01 times the symmetric InfoNCE at tau 0.2
    cos = F.normalize(x_img) @ F.normalize(x_txt).t() / 0.2
    info_nce = 0.5 * ((cos.logsumexp(1) - cos.diag()).mean()
                      + (cos.logsumexp(0) - cos.diag()).mean())
    bpr = -F.logsigmoid(pos - neg).mean()
    expected = bpr + 0.01 * info_nce
    assert scope["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_config_file_snippet(tmp_path):
    from mde_pyg.cli import build_parser, resolve_settings

    with open(osp.join(ROOT, "README.md")) as f:
        (toml,) = re.findall(r"^```toml\n(.*?)^```", f.read(), re.S | re.M)
    path = tmp_path / "run.toml"
    path.write_text(toml.replace('"out/lfm2k_grid"',
                                 repr(str(tmp_path / "out"))))
    args = build_parser().parse_args(["train", "--config", str(path),
                                      "--max-epochs", "3"])
    settings = resolve_settings(args)
    assert settings["model"] == "mde"
    assert settings["max_epochs"] == 3  # the command line wins
    assert settings["modality"] == {"text": "all-MiniLM-L6-v2.npy",
                                    "audio": "vggish.npy"}
    assert settings["hparams"] == {"tau": 0.2}
    assert settings["grid"] == {"lambda_1": [0.01, 0.1],
                                "lambda_2": [0.01, 0.1]}
