"""Strict TOML configuration: unknown keys, bad values, overrides, round trip."""

from dataclasses import dataclass, field

import pytest

from lensgen.config import (
    ConfigError,
    dumps_toml,
    from_dict,
    load_config,
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


def test_load_config_layers_defaults_file_table_and_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "file"\n[train]\nsteps = 20\n')
    assert load_config(Outer) == Outer()
    cfg = load_config(Outer, path, {"train.lr": 0.5, "name": None})
    assert cfg == Outer(name="file", train=Inner(lr=0.5, steps=20))
    # The error names the flag that set the key, not the dotted key.
    with pytest.raises(ConfigError, match=r"^--lr: .*lr must be > 0, got -1"):
        load_config(Outer, path, {"train.lr": -1.0}, {"train.lr": "--lr"})
    # One table of a file; others are refused.
    flow = tmp_path / "flow.toml"
    flow.write_text("[train]\nsteps = 3\n")
    assert load_config(Inner, flow, table="train") == Inner(steps=3)
    with pytest.raises(
        ConfigError, match=r"flow.toml: unknown table 'train' \(expected \[flow\]\)"
    ):
        load_config(Inner, flow, table="flow")
    # A file with a layout of its own is read by its parser, then overridden.
    seen = {}

    def parse(cls, data, where):
        seen["where"] = where
        return cls(name=data["name"].upper())

    assert load_config(Outer, path, {"train.steps": 5}, parse=parse) == Outer(
        name="FILE", train=Inner(steps=5)
    )
    assert seen["where"] == str(path)


def test_overrides_of_one_table_are_checked_together():
    @dataclass(frozen=True)
    class Bounds:
        low: float = 8.0
        high: float = 10.0

        def __post_init__(self):
            if not self.low < self.high:
                raise ConfigError(f"bounds reversed: {self.low} >= {self.high}")

    # Applied one at a time, low = 11 would first meet high = 10 and fail.
    assert with_overrides(Bounds(), {"low": 11.0, "high": 12.0}) == Bounds(11.0, 12.0)
    flags = {"low": "--min", "high": "--max"}
    with pytest.raises(ConfigError, match=r"^--min, --max: bounds reversed: 12.0 >= 11.0"):
        with_overrides(Bounds(), {"low": 12.0, "high": 11.0}, flags)
    # A flag left at its default value did not cause the error, so it is not named.
    with pytest.raises(ConfigError, match=r"^--min: bounds reversed: 12.0 >= 10.0"):
        with_overrides(Bounds(), {"low": 12.0, "high": 10.0}, flags)
