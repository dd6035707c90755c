import pytest

from sentangle.config import build_config, parse_override, parse_seeds
from sentangle.core.errors import ConfigError
from sentangle.runs.folder import resolved_config


def test_layers_and_overrides(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("model:\n  name: lf_dnn\n  hidden: 32\ntrain:\n  epochs: 3\n  aux_weights: {x: 0.5}\n")
    cfg = build_config(config_file=str(user), overrides=["train.lr=3e-4", "model.dropout=0.0", "seeds=2"])
    # the model's defaults (fusion_hidden, modalities) come from its constructor, filled in for the run
    assert resolved_config(cfg).model == {
        "name": "lf_dnn",
        "hidden": 32,
        "fusion_hidden": 128,
        "dropout": 0.0,
        "modalities": None,
    }
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 64  # from configs/datasets/synthetic.yaml
    assert cfg.train.aux_weights == {"x": 0.5}
    assert cfg.seeds == [1111, 1112]
    assert cfg.dataset["name"] == "synthetic"


def test_override_parsing():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("dataset.aligned=true") == (["dataset", "aligned"], True)
    assert parse_override("model.modalities=[text,audio]") == (["model", "modalities"], ["text", "audio"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.lr")


def test_seeds():
    assert parse_seeds(5) == [1111, 1112, 1113, 1114, 1115]
    assert parse_seeds("1111,1113") == [1111, 1113]
    assert parse_seeds("3") == [1111, 1112, 1113]
    with pytest.raises(ConfigError):
        parse_seeds(9)


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="epoch"):
        build_config(overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match="must be a number"):
        build_config(overrides=["train.lr=fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {name: x}\n")
    with pytest.raises(ConfigError, match="modle"):
        build_config(config_file=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(config_file=str(tmp_path / "missing.yaml"))


def test_override_into_an_option_whose_default_is_null(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("model:\n  name: lf_dnn\n  modalities: null\n")
    cfg = build_config(config_file=str(user), overrides=["model.modalities.x=1"])
    assert cfg.model["modalities"] == {"x": 1}


@pytest.mark.parametrize("pair", [("dbr", "mintrec"), ("text_only", "mintrec"), ("dbr", "synthetic")])
def test_packaged_run_configs_apply(pair):
    # These files must ship with the package (a broad ignore rule once kept them out of git).
    import yaml

    from sentangle.config import CONFIG_DIR, build_config

    model, dataset = pair
    path = CONFIG_DIR / "runs" / f"{model}-{dataset}.yaml"
    assert path.is_file(), f"{path} missing"
    cfg = build_config(model, dataset, None, []).to_dict()
    for section, values in yaml.safe_load(path.read_text()).items():
        for k, v in values.items():
            assert cfg[section][k] == v, (section, k)


def test_old_text_options_read_as_the_model_setting():
    import copy

    from sentangle.config import build_config, from_dict
    from sentangle.runs.folder import comparable_config

    with pytest.warns(FutureWarning, match=r"dataset.finetune_text deprecated.*model.text_encoder.finetune"):
        old = build_config("text_only", "mosi", None, ["dataset.finetune_text=true"])
    new = build_config("text_only", "mosi", None, ["model.text_encoder.finetune=all"])
    assert (
        old.model["text_encoder"]
        == new.model["text_encoder"]
        == {"name": "minilm", "finetune": "all", "max_length": 64}
    )
    assert "finetune_text" not in old.dataset
    # a stored config of an older version (dataset options, no model.text_encoder) is the same run
    current = build_config("text_only", "mosi").to_dict()
    stored = copy.deepcopy(current)
    del stored["model"]["text_encoder"]
    stored["dataset"].update(encoder="minilm", max_length=64, finetune_text=False)
    assert from_dict(stored).model["text_encoder"] == {"name": "minilm", "max_length": 64, "finetune": 0}
    assert comparable_config(stored) == comparable_config(current)
    stored["dataset"]["finetune_text"] = 4
    assert comparable_config(stored) != comparable_config(current)


def test_where_the_data_and_the_runs_lie_does_not_make_another_run():
    """A clone elsewhere reads the same data through --data-root, and a run folder may be moved or its
    --out spelt another way: the stored run is the same run (the data themselves are compared by
    runs.folder.check_same_data); another dataset option is not."""
    from sentangle.config import make_config
    from sentangle.runs.folder import comparable_config

    here = make_config("text_only", "mosi", data_root="../shared/data", out="runs").to_dict()
    there = make_config("text_only", "mosi", data_root="/elsewhere/data", out="/elsewhere/runs").to_dict()
    assert here["dataset"]["root"] != there["dataset"]["root"] and here["out"] != there["out"]
    assert comparable_config(here) == comparable_config(there)
    there["dataset"]["holdout_valid"] = True
    assert comparable_config(here) != comparable_config(there)
