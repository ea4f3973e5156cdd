"""The one distribution grammar: every written form, draws, errors, and both users of it."""

import jax
import numpy as np
import pytest

from lensgen.distributions import DISTRIBUTIONS, Distribution, parse_distribution
from lensgen.errors import ConfigError
from lensgen.infer.priors import parse_priors
from lensgen.simulate.scene import load_simulate_config


@pytest.mark.parametrize(
    "value",
    [
        "Normal(2.0, 0.5)",
        "normal(2, 0.5)",
        {"normal": [2.0, 0.5]},
        {"Normal": [2, 0.5]},
        {"dist": "Normal", "loc": 2.0, "scale": 0.5},
        {"dist": "NORMAL", "scale": 0.5, "loc": 2},
    ],
)
def test_every_form_means_the_same(value):
    assert parse_distribution(value, "x") == Distribution("Normal", (2.0, 0.5))


@pytest.mark.parametrize(
    "dist",
    [
        Distribution("Normal", (1.0, 0.5)),
        Distribution("LogNormal", (0.1, 0.2)),
        Distribution("Uniform", (-1.0, 3.0)),
        Distribution("TruncatedNormal", (0.0, 0.2, -0.1, 0.3)),
        Distribution("HalfNormal", (0.7,)),
        Distribution("Fixed", (0.25,)),
    ],
)
def test_table_and_string_forms_round_trip(dist):
    assert parse_distribution(dist.table(), "x") == dist
    assert parse_distribution(str(dist), "x") == dist


def test_draws_follow_their_distribution():
    key = jax.random.key(3)
    n = 200_000
    normal = Distribution("Normal", (1.0, 0.5)).draw(key, n)
    assert normal.dtype == np.float64
    assert normal.mean() == pytest.approx(1.0, abs=0.01) and normal.std() == pytest.approx(
        0.5, rel=0.01
    )
    lognormal = Distribution("LogNormal", (0.1, 0.2)).draw(key, n)
    assert np.log(lognormal).mean() == pytest.approx(0.1, abs=0.005)
    uniform = Distribution("Uniform", (-1.0, 3.0)).draw(key, n)
    assert (
        uniform.min() >= -1.0
        and uniform.max() <= 3.0
        and uniform.mean() == pytest.approx(1.0, abs=0.02)
    )
    trunc = Distribution("TruncatedNormal", (0.0, 0.2, -0.1, 0.3)).draw(key, n)
    assert trunc.min() >= -0.1 and trunc.max() <= 0.3
    # Mean of N(0, 0.2²) truncated to [-0.1, 0.3]: σ (φ(a) − φ(b)) / (Φ(b) − Φ(a)).
    from scipy.stats import truncnorm

    assert trunc.mean() == pytest.approx(truncnorm(-0.5, 1.5, scale=0.2).mean(), abs=0.002)
    half = Distribution("HalfNormal", (0.7,)).draw(key, n)
    assert half.min() >= 0 and half.mean() == pytest.approx(0.7 * np.sqrt(2 / np.pi), rel=0.01)
    assert np.all(Distribution("Fixed", (0.25,)).draw(key, 3) == 0.25)


def test_numpyro_and_draws_agree():
    for name, args in [("Normal", (1.0, 0.5)), ("Uniform", (0.0, 2.0)), ("HalfNormal", (0.7,))]:
        dist = Distribution(name, args)
        x = dist.draw(jax.random.key(0), 100_000)
        assert x.mean() == pytest.approx(float(dist.to_numpyro().mean), abs=0.01)
    assert set(DISTRIBUTIONS) == {
        "Normal",
        "LogNormal",
        "Uniform",
        "TruncatedNormal",
        "HalfNormal",
        "Fixed",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"unifrom": [1, 2]}, "unknown distribution 'unifrom' (did you mean 'uniform'?)"),
        ("Unifrom(1, 2)", "unknown distribution 'Unifrom' (did you mean 'Uniform'?)"),
        ({"uniform": [2, 1]}, "Uniform needs low < high, got 2, 1"),
        ({"uniform": [1]}, "Uniform takes 2 argument(s) (low, high), got 1"),
        ({"normal": [0, 0]}, "Normal scale must be > 0, got 0"),
        ({"normal": [float("nan"), 1]}, "must be finite numbers"),
        ({"normal": ["a", 1]}, "must be numbers"),
        ({"uniform": [1, 2], "normal": [0, 1]}, "one key"),
        ({"loc": 1.0}, "needs a 'dist' key"),
        ([1, 2], "expected a distribution"),
        (True, "expected a distribution"),
    ],
)
def test_bad_distributions_name_the_place_and_the_problem(value, message):
    with pytest.raises(ConfigError) as err:
        parse_distribution(value, "scene.toml lens[0].theta_E")
    assert str(err.value).startswith("scene.toml lens[0].theta_E: ")
    assert message in str(err.value)


def test_priors_and_scene_files_read_the_same_grammar(tmp_path):
    priors = parse_priors(
        {
            "lens": {
                "0": {
                    "theta_E": {"uniform": [1.0, 3.0]},
                    "e1": "TruncatedNormal(0, 0.1, -0.3, 0.3)",
                }
            }
        }
    )
    assert priors["lens.0.theta_E"] == Distribution("Uniform", (1.0, 3.0))
    assert priors["lens.0.e1"].dist == "TruncatedNormal"
    path = tmp_path / "scene.toml"
    path.write_text(
        '[[lens]]\ntype = "SIE"\ntheta_E = "Uniform(1.0, 3.0)"\n'
        'e1 = { dist = "TruncatedNormal", loc = 0.0, scale = 0.1, low = -0.3, high = 0.3 }\n'
        'e2 = "Fixed(0.05)"\n'
    )
    lens = load_simulate_config(path).lens[0]
    assert lens.params["theta_E"] == priors["lens.0.theta_E"]
    assert lens.params["e1"] == priors["lens.0.e1"]
    assert lens.params["e2"] == 0.05
