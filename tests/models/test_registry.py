"""Models of one's own: registered by name, or named by import path in the
CLI, and reloaded by load_run."""

import json
import textwrap

import pytest
import torch

from mde_pyg import models
from mde_pyg.cli import main
from mde_pyg.models import (
    LightGCN,
    build_model,
    get_model_class,
    register_model,
)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))
    return models.MODELS


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    (tmp_path / "my_recs.py").write_text(textwrap.dedent('''
        from mde_pyg.models import LightGCN

        class TwoLayerLightGCN(LightGCN):
            """LightGCN with two layers by default."""

            def __init__(self, data, num_layers=2, **kwargs):
                super().__init__(data, num_layers=num_layers, **kwargs)

        NOT_A_MODEL = 3
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_recs"


def test_register_model(registry, synthetic_graphs):
    class Mine(LightGCN):
        pass

    register_model("Mine", Mine)
    assert "mine" in models.available_models()
    assert get_model_class("MINE") is Mine
    model = build_model("mine", synthetic_graphs, num_layers=1)
    assert type(model) is Mine and model.hparams["num_layers"] == 1
    register_model("mine", Mine)  # the same class again is fine
    with pytest.raises(ValueError, match="'mine' is already registered"):
        register_model("mine", LightGCN)
    register_model("mine", LightGCN, overwrite=True)
    assert get_model_class("mine") is LightGCN
    with pytest.raises(TypeError, match="needs a subclass of "
                       "mde_pyg.models.Recommender"):
        register_model("bad", torch.nn.Linear)
    with pytest.raises(ValueError, match="hold no ':'"):
        register_model("a:b", Mine)


def test_import_paths(own_module):
    cls = get_model_class(f"{own_module}:TwoLayerLightGCN")
    assert cls.__name__ == "TwoLayerLightGCN" and issubclass(cls, LightGCN)
    with pytest.raises(ValueError, match="not a subclass"):
        get_model_class(f"{own_module}:NOT_A_MODEL")
    with pytest.raises(ValueError, match="Cannot import the model "
                       "'no_such_module:X'"):
        get_model_class("no_such_module:X")


def test_cli_trains_and_reloads_a_model_by_import_path(own_module, tiny_folder,
                                                       tmp_path, capsys):
    from mde_pyg.runs import load_run
    from mde_pyg.train import Evaluator

    out = tmp_path / "run"
    target = f"{own_module}:TwoLayerLightGCN"
    assert main(["train", "--model", target, "--data", str(tiny_folder),
                 "--modality", "text=text.npy", "--modality",
                 "image=image.npy", "--ks", "1,2,3", "--eval-metric",
                 "recall@3", "--k-user", "2", "--k-item", "2",
                 "--max-epochs", "2", "--no-progress", "--output",
                 str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["model"] == target  # as written, not lower-cased
    assert result["config"]["model_hparams"]["num_layers"] == 2
    model, data = load_run(out)
    assert type(model).__name__ == "TwoLayerLightGCN"
    test = Evaluator(data, "test", ks=(1, 2, 3))(model)
    assert test == pytest.approx(result["test"], abs=1e-6)

    with pytest.raises(SystemExit):
        main(["train", "--model", "nope", "--dataset", "synthetic",
              "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "unknown model 'nope'; choose from ['mostpop'" in err
    assert "or give the import path 'package.module:Class'" in err


def test_an_import_path_needs_both_halves():
    for name in (":X", "my_recs:"):
        with pytest.raises(ValueError, match="is not an import path; write "
                           "'package.module:Class'"):
            get_model_class(name)


def test_every_model_class_is_exported_by_name():
    # dir(), help() and star imports list them; each is imported on use
    classes = {name: get_model_class(name).__name__
               for name in models.available_models()}
    assert set(classes.values()) <= set(models.__all__)
    scope: dict = {}
    exec("from mde_pyg.models import *", scope)
    assert scope["MDE"] is get_model_class("mde")
    assert scope["FREEDOM"] is get_model_class("freedom")
