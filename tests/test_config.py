"""Strict TOML configuration: unknown keys, bad values, overrides, round trip."""

from dataclasses import dataclass, field

import pytest

from lensgen.config import (
    ConfigError,
    dumps_toml,
    from_dict,
    load_toml,
    to_dict,
    with_overrides,
)
from lensgen.simulate.scene import load_simulate_config


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    train: Inner = field(default_factory=Inner)


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'stepz' \(did you mean 'steps'\?\)"):
        from_dict(Outer, {"train": {"stepz": 3}}, "cfg.toml")


def test_bad_type_and_value_name_the_key():
    with pytest.raises(ConfigError, match=r"cfg.toml.train.steps: expected an integer"):
        from_dict(Outer, {"train": {"steps": "many"}}, "cfg.toml")
    with pytest.raises(ConfigError, match="lr must be > 0"):
        from_dict(Outer, {"train": {"lr": -1.0}}, "cfg.toml")


def test_overrides_beat_file_and_none_is_skipped():
    cfg = from_dict(Outer, {"train": {"lr": 0.1}})
    cfg = with_overrides(cfg, {"train.lr": 0.5, "train.steps": None})
    assert cfg.train.lr == 0.5 and cfg.train.steps == 10
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        with_overrides(cfg, {"trian.lr": 1.0})


def test_toml_round_trip(tmp_path):
    cfg = Outer(name='a "quoted" name', train=Inner(lr=0.25, steps=7))
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(to_dict(cfg)))
    assert from_dict(Outer, load_toml(path)) == cfg


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_toml(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "absent.toml")


def test_simulate_config_sections_and_distributions(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(
        '[[lens]]\ntype = "SIE"\ntheta_E = { uniform = [1.0, 2.0] }\ne1 = 0.1\ne2 = 0.0\n'
        "[instrument]\nnpix = 64\n[noise]\nexptime = 500.0\n"
    )
    cfg = load_simulate_config(path)
    assert cfg.lens[0].type == "SIE" and cfg.instrument.npix == 64 and cfg.noise.exptime == 500.0
    path.write_text("[instrumnet]\nnpix = 64\n")
    with pytest.raises(ConfigError, match="did you mean 'instrument'"):
        load_simulate_config(path)
    path.write_text('[[lens]]\ntype = "SIS"\ntheta_E = { unifrom = [1.0, 2.0] }\n')
    with pytest.raises(ConfigError, match="unknown distribution 'unifrom'.*uniform"):
        load_simulate_config(path)
    path.write_text("[instrument]\nnpix = 0\n")
    with pytest.raises(ConfigError, match="npix must be >= 8"):
        load_simulate_config(path)
    path.write_text("[noise]\nexptime = -5.0\n")
    with pytest.raises(ConfigError, match="exptime must be a finite number >= 0"):
        load_simulate_config(path)
