"""`gdn-models`: one row per conf/model config, parameters equal to a really instantiated model's."""
import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gdn.models import MIXERS, inspect_cli
from gdn.models.flops import MIXER_FLOPS
from gdn.train.cli import group_choices
from gdn.train.main import CONF_DIR, register_resolvers


@pytest.fixture(scope="module")
def json_rows() -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "gdn.models.inspect_cli", "format=json"],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def instantiated_model(name: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "logging=none"])
    return instantiate(cfg.model, _convert_="all"), cfg


def has_flop_count(mixer_name: str) -> bool:
    return any(cls in MIXER_FLOPS for cls in MIXERS[mixer_name].__mro__)


def test_every_model_config_is_listed_with_its_real_parameter_count(json_rows):
    assert [row["name"] for row in json_rows] == group_choices(CONF_DIR, "model")
    for row in json_rows:
        model, cfg = instantiated_model(row["name"])
        assert set(row) == {"name", "params", "flops_per_token", "pattern"}
        assert row["params"] == sum(p.numel() for p in model.parameters()), row["name"]
        assert row["pattern"] == list(cfg.model.layers)
        if all(has_flop_count(mixer) for mixer in row["pattern"]):
            assert row["flops_per_token"] > 2 * row["params"] - 2 * model.embed.weight.numel(), row["name"]
        else:  # a mixer without a registered count: reported as null (and named on stderr), never guessed
            assert row["flops_per_token"] is None, row["name"]


def test_unknown_scale_lists_the_choices(tmp_path, monkeypatch):
    (tmp_path / "scale").mkdir()
    for name in ("tiny", "0.4b"):
        (tmp_path / "scale" / f"{name}.yaml").write_text("# @package _global_\n")
    monkeypatch.setattr(inspect_cli, "CONF_DIR", tmp_path)
    with pytest.raises(SystemExit, match="unknown scale 'huge'; choices: 0.4b, tiny"):
        inspect_cli.scale_overrides("huge")


def test_without_a_scale_folder_the_config_sizes_are_listed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inspect_cli, "CONF_DIR", tmp_path)
    assert inspect_cli.scale_overrides("tiny") == []
    assert "no conf/scale/" in capsys.readouterr().err
    assert inspect_cli.scale_overrides("default") == []


@pytest.mark.parametrize("train_defaults, override", [("[{model: gdn}, {scale: null}]", "scale=tiny"),
                                                      ("[{model: gdn}]", "+scale=tiny")])
def test_a_known_scale_becomes_an_override(tmp_path, monkeypatch, train_defaults, override):
    (tmp_path / "scale").mkdir()
    (tmp_path / "scale" / "tiny.yaml").write_text("# @package _global_\n")
    (tmp_path / "train.yaml").write_text(f"defaults: {train_defaults}\n")
    monkeypatch.setattr(inspect_cli, "CONF_DIR", tmp_path)
    assert inspect_cli.scale_overrides("tiny") == [override]
