"""`lensgen infer` and `lensgen demo` through the real CLI (Typer's CliRunner), toy sizes."""

import dataclasses

import pytest
from typer.testing import CliRunner

from lensgen.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sersic_obs(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "obs.fits"
    args = [
        "simulate",
        "--source",
        "sersic",
        "--npix",
        "32",
        "--pixel-scale",
        "0.18",
        "--out",
        str(path),
        "--no-preview",
        "--seed",
        "3",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return path


def test_show_priors_lists_the_model_parameters(sersic_obs, tmp_path):
    result = runner.invoke(app, ["infer", str(sersic_obs), "--show-priors"])
    assert result.exit_code == 0, result.output
    lines = {
        line.split("=")[0].strip(): line.split("=", 1)[1].strip()
        for line in result.output.splitlines()[1:]
    }
    assert lines["lens.0.theta_E"] == '"Uniform(0.2, 4)"'
    assert lines["source.0.n_sersic"] == '"Uniform(0.5, 6)"'
    assert "source.0.R_sersic" in result.output
    priors = tmp_path / "p.toml"
    priors.write_text('[priors]\nlens.0.theta_e = "Normal(2, 1)"\n')
    result = runner.invoke(
        app, ["infer", str(sersic_obs), "--show-priors", "--priors", str(priors)]
    )
    assert result.exit_code == 1
    assert "unknown parameter 'lens.0.theta_e'" in result.output and "theta_E" in result.output


def test_infer_map_on_a_simulated_file(sersic_obs, tmp_path):
    from lensgen.io.fits import read_observation

    out = tmp_path / "out"
    args = ["infer", str(sersic_obs), "--method", "map", "--map-steps", "300", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {"posterior_map.nc", "summary_map.csv", "bestfit.png", "theta_E.png", "config.toml"} <= {
        p.name for p in out.iterdir()
    }
    import pandas as pd

    table = pd.read_csv(out / "summary_map.csv", index_col=0)
    truth = read_observation(sersic_obs).truth
    assert table.loc["lens.0.theta_E", "mean"] == pytest.approx(truth["lens.0.theta_E"], rel=0.01)


def test_infer_missing_exptime_names_the_keyword(sersic_obs, tmp_path):
    from lensgen.io.fits import read_observation, write_observation

    obs = read_observation(sersic_obs)
    bare = write_observation(
        tmp_path / "bare.fits", dataclasses.replace(obs, noise_map=None, exptime=None)
    )
    result = runner.invoke(app, ["infer", str(bare), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "EXPTIME" in result.output and "--exptime" in result.output


def test_demo_at_toy_size(tmp_path):
    """The main job end to end with the embedded source model, at toy size."""
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--npix",
        "24",
        "--num-warmup",
        "30",
        "--num-samples",
        "40",
        "--svi-steps",
        "100",
        "--map-steps",
        "200",
        "--map-restarts",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "truth vs posterior" in result.output and "lens.0.theta_E" in result.output
    assert (out / "posterior" / "theta_E.png").exists()
    assert (out / "posterior" / "posterior_nuts.nc").exists()
    import pandas as pd

    table = pd.read_csv(out / "posterior" / "summary_nuts.csv", index_col=0)
    assert abs(table.loc["lens.0.theta_E", "mean"] - 2.3) < 0.2
