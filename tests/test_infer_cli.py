"""`lensgen infer` and `lensgen demo` through the real CLI (Typer's CliRunner), toy sizes."""

import dataclasses

import pytest
from conftest import run_cli


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
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return path


def test_show_priors_lists_the_model_parameters(sersic_obs, tmp_path):
    result = run_cli(*["infer", str(sersic_obs), "--show-priors"])
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
    result = run_cli(*["infer", str(sersic_obs), "--show-priors", "--priors", str(priors)])
    assert result.exit_code == 1
    assert "unknown parameter 'lens.0.theta_e'" in result.output and "theta_E" in result.output


def test_infer_map_on_a_simulated_file(sersic_obs, tmp_path):
    from lensgen.io.fits import read_observation

    out = tmp_path / "out"
    args = ["infer", str(sersic_obs), "--method", "map", "--map-steps", "300", "--out", str(out)]
    result = run_cli(*[*args, "--map-restarts", "3"])
    assert result.exit_code == 0, result.output
    assert "map_restarts = 3" in (out / "config.toml").read_text()
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
    result = run_cli(*["infer", str(bare), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "EXPTIME" in result.output and "--exptime" in result.output


def test_demo_toy_runs_every_stage(tmp_path):
    """Toy-size `lensgen demo` (the default suite's version of the slow seed case below):
    simulate, MAP, NUTS, SVI, report and every output file, on 16×16 pixels."""
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--npix", 16, "--num-warmup", 20, "--num-samples", 20]
    args += ["--num-chains", 1, "--target-ess", 0, "--svi-steps", 40, "--map-steps", 60]
    args += ["--map-restarts", 1, "--seed", 0]
    result = run_cli(*[str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "truth vs posterior" in result.output and "lens.0.theta_E" in result.output
    assert (out / "obs.fits").is_file()
    for name in ("theta_E.png", "bestfit.png", "corner_nuts.png", "summary_nuts.csv",
                 "posterior_svi.nc", "config.toml", "bestfit_lenstronomy.json",
                 "draws_lenstronomy_nuts.json", "draws_lenstronomy_svi.json"):  # fmt: skip
        assert (out / "posterior" / name).stat().st_size > 0, name


@pytest.mark.slow
def test_demo_seed_case_with_the_learned_source(tmp_path):
    """The seed case through `lensgen demo` with the embedded learned source (40×40 px).

    Issue 5's criterion: the true θ_E = 2.3 inside the central 95% interval and the
    posterior mean within 1% of it, for NUTS and for SVI.
    """
    import arviz as az
    import numpy as np

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--npix", "40", "--num-warmup", "150"]
    args += ["--num-samples", "200", "--svi-steps", "600", "--seed", "0"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "truth vs posterior" in result.output and "lens.0.theta_E" in result.output
    for name in ("theta_E.png", "bestfit.png", "corner_nuts.png", "summary_nuts.csv"):
        assert (out / "posterior" / name).exists(), name
    for method in ("nuts", "svi"):
        idata = az.from_netcdf(out / "posterior" / f"posterior_{method}.nc")
        draws = np.asarray(idata.posterior["lens.0.theta_E"]).reshape(-1)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        assert lo < 2.3 < hi, (method, lo, hi)
        assert abs(draws.mean() - 2.3) < 0.01 * 2.3
        assert 0 < draws.std() < 0.01


def test_demo_cli_defaults_are_the_demo_config_defaults():
    """`lensgen demo` with no flags runs DemoConfig() (the settings BENCHMARKS.md times)."""
    import inspect

    from lensgen.cli.demo import demo
    from lensgen.infer.demo import DemoConfig

    defaults = DemoConfig()
    for name, param in inspect.signature(demo).parameters.items():
        if hasattr(defaults, name) and name != "source_model":
            assert param.default.default == getattr(defaults, name), name


def test_demo_warmup_trees_are_shallower_than_its_sampling_trees():
    """The demo's warm-up trees (depth 4) reach NUTS; depths outside 1..15 are refused."""
    from lensgen.errors import ConfigError
    from lensgen.infer.demo import DemoConfig
    from lensgen.infer.samplers import NutsSettings

    settings = NutsSettings.from_config(DemoConfig().infer_config())
    assert settings.max_tree_depth == (4, 5)
    with pytest.raises(ConfigError, match="max_tree_depth_warmup must be in 1..15, got 0"):
        DemoConfig(max_tree_depth_warmup=0)
