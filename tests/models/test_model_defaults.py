"""One source of model defaults (the constructor's signature) and one check of option names."""

import functools
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import sentangle
from sentangle.config import CONFIG_DIR, make_config, read_yaml
from sentangle.core.errors import ConfigError, SweepError
from sentangle.core.registry import MODELS, check_options
from sentangle.models import create_model, list_models
from sentangle.recipes.sweep import check_keys, read_space
from sentangle.runs.folder import comparable_config, resolved_config
from sentangle.runs.runner import model_for

DIMS = {"text": 12, "audio": 6, "vision": 8}
# A dataset with no configs/runs/<model>-<dataset>.yaml for any model: the config path then adds
# nothing to a model's own defaults (synthetic has tuned pairs, e.g. dbr-synthetic).
PLAIN_DATASET = "mosi"


def record_arguments(monkeypatch, name: str) -> list[dict]:
    """Replace model `name` in the registry by a wrapper that records every argument its
    constructor receives, defaults included (what the model is built from)."""
    cls, seen = MODELS.get(name), []

    @functools.wraps(cls)
    def build(*args, **kwargs):
        bound = inspect.signature(cls).bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append({k: v for k, v in bound.arguments.items() if k != "input_dims"})
        return cls(*args, **kwargs)

    monkeypatch.setitem(MODELS._items, name, build)
    return seen


@pytest.mark.parametrize("name", list_models())
def test_create_model_builds_what_training_builds(name, monkeypatch):
    assert not (CONFIG_DIR / "runs" / f"{name}-{PLAIN_DATASET}.yaml").exists()
    seen = record_arguments(monkeypatch, name)
    direct = create_model(name, DIMS)
    data = SimpleNamespace(input_dims=DIMS, output_dim=1, text_encoder=None, modalities=tuple(DIMS), splits={})
    trained = model_for(make_config(model=name, dataset=PLAIN_DATASET), data)
    assert len(seen) == 2
    # the dataset config names its (frozen) text encoder, create_model none: both read cached features
    without_text = [{k: v for k, v in s.items() if k != "text_encoder"} for s in seen]
    assert without_text[0] == without_text[1]
    assert direct.text_encoder is None and trained.text_encoder is None
    assert sum(p.numel() for p in direct.parameters()) == sum(p.numel() for p in trained.parameters())


@pytest.mark.parametrize("name", list_models())
def test_model_yaml_sets_no_model_option(name):
    path = CONFIG_DIR / "models" / f"{name}.yaml"
    if path.exists():
        assert "model" not in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("name", list_models())
def test_resolved_config_lists_every_constructor_option(name):
    params = inspect.signature(MODELS.get(name)).parameters
    expected = {k: p.default for k, p in params.items() if k not in ("input_dims", "output_dim", "text_encoder")}
    model = resolved_config(make_config(model=name, dataset=PLAIN_DATASET)).model
    # plus the text encoder the dataset config names (configs/datasets/mosi.yaml)
    frozen_minilm = {"name": "minilm", "finetune": 0, "max_length": 64}
    assert model == {"name": name, **expected, "text_encoder": frozen_minilm}


def test_resolved_config_keeps_given_values_and_updates_mapping_defaults():
    cfg = make_config(model="mult", dataset=PLAIN_DATASET, overrides=["model.attn_dropout.audio=0.1", "model.dim=20"])
    model = resolved_config(cfg).model
    assert model["dim"] == 20
    # text and vision keep their rates, as the YAML layers did
    assert model["attn_dropout"] == {"text": 0.3, "audio": 0.1, "vision": 0.0}
    built = model_for(
        cfg, SimpleNamespace(input_dims=DIMS, output_dim=1, text_encoder=None, modalities=tuple(DIMS), splits={})
    )
    assert built.crossmodal["audio_from_text"].layers[0].attn.dropout == 0.1
    assert built.crossmodal["text_from_audio"].layers[0].attn.dropout == 0.3
    # full length by default, as MulT
    assert built.max_len == {"text": 0, "audio": 0, "vision": 0}


def test_irg_svr_differs_from_rtil_only_in_its_temporal_preset():
    rtil, irg = create_model("rtil", DIMS), create_model("irg_svr", DIMS)
    assert rtil.temporal_plan == {m: "jsd" for m in DIMS} and irg.temporal_plan == {m: "tv" for m in DIMS}
    assert [(n, p.shape) for n, p in rtil.named_parameters()] == [(n, p.shape) for n, p in irg.named_parameters()]


def test_stored_config_without_later_options_compares_by_their_defaults():
    fresh = resolved_config(make_config(model="lf_dnn", dataset=PLAIN_DATASET)).to_dict()
    stored = {**fresh, "model": {k: v for k, v in fresh["model"].items() if k != "modalities"}}
    assert comparable_config(stored) == comparable_config(fresh)
    stored["model"]["hidden"] = 64
    assert comparable_config(stored) != comparable_config(fresh)


def test_stored_config_without_an_added_option_is_the_model_it_was():
    # dbr's encoder_norm came after dbr runs existed: a config lacking it was trained without it.
    fresh = resolved_config(make_config(model="dbr", dataset=PLAIN_DATASET)).to_dict()
    assert fresh["model"]["encoder_norm"] is True
    stored = {**fresh, "model": {k: v for k, v in fresh["model"].items() if k != "encoder_norm"}}
    assert comparable_config(stored) != comparable_config(fresh)
    stored["model"]["encoder_norm"] = True
    assert comparable_config(stored) == comparable_config(fresh)


def test_check_options_names_unknown_close_and_valid():
    def reader(root=None, scale=1.0, seed=0, aligned=False):
        pass

    with pytest.raises(ConfigError) as e:
        check_options(reader, ["scal", "sede", "seed"], "dataset 'x'", skip=("root",))
    msg = str(e.value)
    assert "dataset 'x' has no option(s) ['scal', 'sede']" in msg
    assert "did you mean 'scale' or 'seed'?" in msg
    assert msg.endswith("its options are: scale, seed, aligned")
    check_options(reader, ["scale", "aligned"], "dataset 'x'")  # known options pass
    check_options(lambda **kw: None, ["anything"], "passes them on")  # **kwargs: the receiver checks


def test_unknown_model_option_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"model 'rtil' has no option\(s\) \['hiden'\] \(did you mean 'hidden'"):
        create_model("rtil", DIMS, hiden=8)


def test_sweep_dataset_keys_use_the_same_check(tmp_path: Path):
    path = tmp_path / "space.yaml"
    path.write_text("dataset.scal: [0.1, 0.2]\n")
    with pytest.raises(SweepError, match=r"dataset has no setting 'scal'; known: .*scale.*did you mean 'scale'"):
        check_keys(path, read_space(path), make_config("lf_dnn", "synthetic"))
    path.write_text("dataset.scale: [0.1, 0.2]\ndataset.holdout_valid: [true, false]\n")
    check_keys(path, read_space(path), make_config("lf_dnn", "synthetic"))


def test_run_folder_config_lists_every_model_option_and_stays_the_same_config(tmp_path):
    tiny = {"name": "synthetic", "n_train": 24, "n_valid": 8, "n_test": 8, "lengths": 4, "dims": 4}
    settings = {"out": str(tmp_path), "seeds": 1, "train": {"epochs": 1, "progress": False}}
    res = sentangle.train({"name": "mult", "dim": 4, "heads": 2, "layers": 1}, tiny, **settings)
    written = read_yaml(Path(res["folder"]) / "config.yaml")
    params = inspect.signature(MODELS.get("mult")).parameters
    assert set(written["model"]) == {"name"} | set(params) - {"input_dims", "output_dim", "text_encoder"}
    assert written["model"]["max_len"] == 0 and written["model"]["future_mask"] is True and written["model"]["dim"] == 4
    again = make_config({"name": "mult", "dim": 4, "heads": 2, "layers": 1}, tiny, **settings)
    assert comparable_config(written) == comparable_config(resolved_config(again).to_dict())
