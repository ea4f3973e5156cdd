"""Priors: parsing (string and table form), strict errors, defaults and --show-priors text."""

import math

import pytest

from lensgen.errors import ConfigError
from lensgen.infer.priors import (
    Prior,
    default_prior,
    format_priors,
    load_priors,
    parse_prior,
    parse_priors,
    resolve_priors,
)


def test_parse_string_and_table_forms_agree():
    a = parse_prior("Normal(2.0, 0.5)", "x")
    b = parse_prior({"dist": "Normal", "loc": 2.0, "scale": 0.5}, "x")
    assert a == b == Prior("Normal", (2.0, 0.5))
    assert (
        str(parse_prior("TruncatedNormal(0, 0.2, -0.5, 0.5)", "x"))
        == "TruncatedNormal(0, 0.2, -0.5, 0.5)"
    )
    assert parse_prior(1.5, "x") == Prior("Fixed", (1.5,))
    assert parse_prior("Fixed(0.25)", "x").fixed


def test_numpyro_distributions_have_the_right_moments():
    d = parse_prior("Uniform(1.0, 3.0)", "x").to_numpyro()
    assert float(d.mean) == pytest.approx(2.0)
    d = parse_prior("LogNormal(0.0, 0.5)", "x").to_numpyro()
    assert float(d.mean) == pytest.approx(math.exp(0.125))
    d = parse_prior("TruncatedNormal(0.0, 1.0, -1.0, 1.0)", "x").to_numpyro()
    assert float(d.log_prob(0.5)) > float(
        parse_prior("Normal(0.0, 1.0)", "x").to_numpyro().log_prob(0.5)
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Normall(1, 2)", "did you mean 'Normal'"),
        ("Normal(1)", "takes 2 argument(s) (loc, scale), got 1"),
        ("Normal(1, -2)", "scale must be > 0"),
        ("Uniform(3, 1)", "needs low < high"),
        ("Normal(1, 'a')", "must be numbers"),
        ("Normal 1 2", "cannot parse"),
        ({"dist": "Normal", "loc": 1.0, "sigma": 2.0}, "unknown argument 'sigma'"),
        ({"dist": "Normal", "loc": 1.0}, "missing argument(s) scale"),
        ({"loc": 1.0}, "needs a 'dist' key"),
        (True, "expected a distribution"),
    ],
)
def test_bad_priors_name_the_problem(value, message):
    with pytest.raises(ConfigError, match="where-key") as err:
        parse_prior(value, "where-key")
    assert message in str(err.value)


def test_toml_dotted_keys_and_strict_names(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[priors]\nlens.0.theta_E = "Uniform(1.0, 3.0)"\n'
        'lens.0.center_x = { dist = "Fixed", value = 0.0 }\n'
    )
    priors = load_priors(path)
    assert priors == {
        "lens.0.theta_E": Prior("Uniform", (1.0, 3.0)),
        "lens.0.center_x": Prior("Fixed", (0.0,)),
    }
    names = ["lens.0.theta_E", "lens.0.center_x", "lens.0.center_y"]
    resolved = resolve_priors(names, priors)
    assert resolved["lens.0.center_y"] == default_prior("lens.0.center_y")
    with pytest.raises(ConfigError, match="unknown parameter 'lens.0.theta_e'.*theta_E"):
        resolve_priors(names, {"lens.0.theta_e": Prior("Normal", (2.0, 1.0))})
    bad = tmp_path / "bad.toml"
    bad.write_text('[prior]\nx = "Normal(0, 1)"\n')
    with pytest.raises(ConfigError, match="unknown top-level key 'prior'"):
        load_priors(bad)


def test_format_round_trips():
    priors = {n: default_prior(n) for n in ["lens.0.theta_E", "lens.1.gamma1", "source.0.flux"]}
    text = format_priors(priors)
    assert 'lens.0.theta_E = "Uniform(0.2, 4)"' in text
    import tomllib

    assert parse_priors(tomllib.loads(text)["priors"]) == priors


def test_examples_priors_file_parses():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "infer_priors.toml"
    priors = load_priors(path)
    assert priors["lens.0.theta_E"].dist == "Uniform"
