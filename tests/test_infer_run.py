"""Inference on small simulated lenses: recovery (MAP, NUTS, SVI), bad input, outputs.

The learned source is replaced by a stand-in SourceModel whose decoder is a
differentiable elliptical Gaussian blob set by z, so these tests do not depend on
a trained network; the seed case with the embedded model is in test_infer_cli.py.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blob_case import FAST, NPIX, TRUTH, Z_TRUE, BlobSource, blob_observation

from lensgen.errors import LensgenError
from lensgen.infer.run import (
    build_problem,
    find_map,
    run_infer,
    run_inference,
    run_nuts,
    run_svi,
)
from lensgen.io.fits import read_observation, write_observation


@pytest.fixture(scope="module")
def map_case():
    """The MAP stage of ``run_inference`` on the stand-in seed case."""
    obs = blob_observation()
    problem = build_problem(FAST, obs, BlobSource())
    return obs, problem, find_map(jax.random.PRNGKey(3), problem, FAST)


@pytest.fixture(scope="module")
def seed_case(map_case):
    """NUTS and SVI started from the MAP (slow; the toy versions are at the end of this module)."""
    obs, problem, start = map_case
    results = [
        run_nuts(jax.random.PRNGKey(4), problem, FAST, start),
        run_svi(jax.random.PRNGKey(5), problem, FAST, start),
    ]
    return obs, problem, start, results


def test_map_recovers_the_injected_lens(map_case):
    obs, problem, res = map_case
    assert res.point["lens.0.theta_E"] == pytest.approx(2.3, rel=3e-3)
    from lensgen.infer.run import render_values

    _, model = render_values(problem, res.point)
    chi2 = float(np.mean(((obs.image - np.asarray(model)) / obs.noise_map) ** 2))
    assert 0.8 < chi2 < 1.25  # the MAP model fits the data to the noise
    assert res.chi2 == pytest.approx(chi2, rel=1e-3)
    assert res.point["source.0.flux"] == pytest.approx(40.0, rel=0.05)
    # The source is placed by its light: centroid and core radius are measured directly,
    assert res.point["source.0.size"] == pytest.approx(TRUTH["source.0.size"], rel=0.02)
    assert res.point["source.0.center_x"] == pytest.approx(TRUTH["source.0.center_x"], abs=0.01)
    # and the latent its shape and orientation (the rotation phi_G is fixed).
    np.testing.assert_allclose(res.point["source.z"], Z_TRUE, atol=0.15)
    # The Newton polish ends at or below the lowest potential Adam reached.
    assert res.mode.potential <= res.loss.min() + 1e-6
    # It is a minimum: zero gradient, positive curvature, so the Laplace covariance holds.
    assert res.mode.curvature.min() > 0
    assert res.mode.grad @ res.mode.cov @ res.mode.grad < 1e-3
    # A fit within the noise (χ² excess under CHI2_RETRY spreads) runs one round of restarts.
    assert len(res.restart_potentials) == FAST.map_restarts


def test_a_map_that_cannot_fit_the_data_warns(map_case):
    """A feature the model lacks (a bright blob off the ring) → χ²/N ≫ 1 → a warning."""
    from lensgen.infer.run import with_data

    obs, problem, _ = map_case
    ny, nx = obs.image.shape
    yy, xx = np.mgrid[:ny, :nx]
    blob = 5.0 * np.exp(-0.5 * ((xx - 4) ** 2 + (yy - 5) ** 2) / 1.5**2)
    bad = dataclasses.replace(obs, image=obs.image + blob)
    with pytest.warns(UserWarning, match="χ²/N"):
        res = find_map(jax.random.PRNGKey(3), with_data(problem, bad), FAST)
    assert res.chi2 > 1.5
    # A fit worse than the noise allows gets a second round of restarts from new starts.
    assert len(res.restart_potentials) == 2 * FAST.map_restarts
    assert res.mode.potential == pytest.approx(np.min(res.restart_potentials))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_seed_case_theta_e_recovered(seed_case, method):
    obs, _, _, results = seed_case
    res = {r.method: r for r in results}[method]
    draws = res.samples["lens.0.theta_E"].reshape(-1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    assert lo < 2.3 < hi
    assert abs(draws.mean() - 2.3) < 0.01 * 2.3
    assert draws.std() > 0  # a posterior, not a point
    if method == "nuts":
        assert res.samples["lens.0.theta_E"].shape == (2, 150)
        assert res.sample_stats["diverging"].shape == (2, 150)
        assert res.diagnostics["divergences"] == int(res.sample_stats["diverging"].sum())
    else:
        elbo = res.diagnostics["elbo"]
        assert elbo.shape == (600,) and np.isfinite(elbo).all()
        # The guide starts at the Laplace approximation, so the ELBO may only stay
        # level or rise (within its Monte Carlo noise), never fall.
        noise = np.sqrt((elbo[:100].var() + elbo[-100:].var()) / 100)  # s.e. of the difference
        assert elbo[-100:].mean() > elbo[:100].mean() - 4 * noise
        # Full-rank SVI and NUTS agree on the width of p(θ_E | obs).
        nuts = {r.method: r for r in results}["nuts"].samples["lens.0.theta_E"]
        assert draws.std() == pytest.approx(nuts.std(), rel=0.3)


def test_flow_latent_is_sampled_in_u_space():
    obs = blob_observation(source_model=BlobSource(has_flow=True))
    cfg = dataclasses.replace(FAST, method="map", map_restarts=1, map_steps=300)
    problem = build_problem(cfg, obs, BlobSource(has_flow=True))
    assert problem.spec.latent == "flow"
    res = run_inference(jax.random.PRNGKey(0), problem, cfg)[0]
    # z = 0.8 u + 0.1 is recorded as a deterministic site next to u.
    np.testing.assert_allclose(res.point["source.z"], 0.8 * res.point["source.u"] + 0.1, rtol=1e-6)
    assert res.point["source.0.size"] == pytest.approx(TRUTH["source.0.size"], rel=0.02)
    normal = build_problem(
        dataclasses.replace(cfg, latent_prior="normal"), obs, BlobSource(has_flow=True)
    )
    assert normal.spec.latent == "normal"


def test_missing_noise_keywords_name_them():
    obs = dataclasses.replace(blob_observation(), noise_map=None, exptime=None)
    with pytest.raises(LensgenError, match="EXPTIME.*--exptime"):
        build_problem(FAST, obs, BlobSource())
    obs = dataclasses.replace(obs, exptime=1000.0, background_rms=None)
    with pytest.raises(LensgenError, match="BKGRMS.*--background-rms"):
        build_problem(FAST, obs, BlobSource())
    with pytest.raises(LensgenError, match="NOISE extension.*BKGRMS"):
        build_problem(dataclasses.replace(FAST, likelihood="gaussian"), obs, BlobSource())
    # Supplying the keyword on the command line is enough.
    problem = build_problem(dataclasses.replace(FAST, background_rms=0.05), obs, BlobSource())
    assert problem.spec.likelihood == "poisson"


def test_fits_without_pixel_scale_names_the_keyword(tmp_path):
    from astropy.io import fits

    path = tmp_path / "bare.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(path)
    with pytest.raises(LensgenError, match="PIXSCALE"):
        run_infer(FAST, path, tmp_path / "out", seed=0)


def test_nan_pixels_are_masked_with_a_warning():
    obs = blob_observation()
    image = obs.image.copy()
    image[3:5, 7] = np.nan
    with pytest.warns(UserWarning, match="2 NaN pixel"):
        problem = build_problem(FAST, dataclasses.replace(obs, image=image), BlobSource())
    mask = np.asarray(problem.data.mask)
    assert mask.sum() == NPIX * NPIX - 2 and not mask[3, 7]
    assert np.all(np.isfinite(np.asarray(problem.data.image)))


def test_divergences_are_reported(capsys):
    """Divergent transitions reach the summary table and a printed warning."""
    from rich.console import Console

    from lensgen.infer.report import print_summary, summary
    from lensgen.infer.run import InferenceResult

    rng = np.random.default_rng(0)
    diverging = np.zeros((2, 50), bool)
    diverging[1, [3, 9, 20]] = True
    res = InferenceResult(
        "nuts",
        {"lens.0.theta_E": 2.3 + 0.01 * rng.standard_normal((2, 50))},
        {"diverging": diverging},
        {},
        {"divergences": int(diverging.sum())},
    )
    table = summary(res)
    assert (table["divergences"] == 3).all()
    assert table.loc["lens.0.theta_E", "mean"] == pytest.approx(2.3, abs=0.005)
    print_summary(table, "nuts", {"lens.0.theta_E": 2.3}, Console(force_terminal=False))
    assert "3 divergent transition(s) in nuts" in capsys.readouterr().out


def test_poisson_likelihood_variance_follows_the_model():
    import numpyro

    obs = blob_observation()
    cfg = dataclasses.replace(FAST, likelihood="poisson")
    problem = build_problem(cfg, obs, BlobSource())
    values = {**TRUTH, "source.z": Z_TRUE}
    values = {k: jnp.asarray(v) for k, v in values.items()}
    trace = numpyro.handlers.trace(
        numpyro.handlers.substitute(problem.model, data=values)
    ).get_trace(problem.data)
    sigma = trace["obs"]["fn"].base_dist.base_dist.scale
    model = trace["obs"]["fn"].base_dist.base_dist.loc
    np.testing.assert_allclose(sigma, np.sqrt(0.05**2 + np.maximum(model, 0) / 1000.0), rtol=1e-6)
    np.testing.assert_allclose(model, obs.model, rtol=1e-6, atol=1e-9)


def test_run_infer_writes_outputs(tmp_path):
    obs = blob_observation()
    path = write_observation(tmp_path / "obs.fits", obs)
    cfg = dataclasses.replace(
        FAST, method="svi", svi_steps=200, svi_samples=200, map_restarts=1, map_steps=300
    )
    run_infer(cfg, path, tmp_path / "out", seed=0, source_model=BlobSource())
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "bestfit.png",
        "bestfit_lenstronomy.json",
        "config.toml",
        "coolest.json",
        "coolest_image.fits",
        "coolest_noise_map.fits",
        "coolest_psf.fits",
        "coolest_source_0.fits",
        "corner_svi.png",
        "draws_lenstronomy_svi.json",
        "elbo.png",
        "posterior_svi.nc",
        "summary_svi.csv",
        "theta_E.png",
    ]
    import arviz as az

    idata = az.from_netcdf(tmp_path / "out" / "posterior_svi.nc")
    assert idata.posterior["lens.0.theta_E"].shape == (1, 200)
    assert idata.observed_data["image"].shape == (NPIX, NPIX)
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "summary_svi.csv", index_col=0)
    assert list(table.columns) == [
        "mean",
        "sd",
        "hdi_3%",
        "hdi_97%",
        "r_hat",
        "ess_bulk",
        "ess_tail",
    ]  # no divergence count: SVI does not measure one
    assert table.loc["lens.0.theta_E", "mean"] == pytest.approx(2.3, rel=0.01)
    with pytest.raises(LensgenError, match="not empty"):
        run_infer(cfg, path, tmp_path / "out", seed=0, source_model=BlobSource())
    assert read_observation(path).truth["lens.0.theta_E"] == 2.3
    assert math.isfinite(float(table.loc["lens.0.theta_E", "sd"]))


# --- early stopping and what the stages report (on the same MAP) ---


@pytest.fixture(scope="module")
def nuts_case(map_case):
    """The MAP of the stand-in seed case with NUTS settings that stop early."""
    cfg = dataclasses.replace(FAST, num_samples=600, target_ess=150, max_tree_depth=8)
    _, problem, start = map_case
    return cfg, problem, start


def test_nuts_stops_once_the_targets_are_met(nuts_case):
    cfg, problem, start = nuts_case
    res = run_nuts(jax.random.PRNGKey(4), problem, cfg, start)
    d = res.diagnostics
    assert d["converged"] is True
    assert d["draws_per_chain"] < cfg.num_samples  # stopped early
    assert res.samples["lens.0.theta_E"].shape == (2, d["draws_per_chain"])
    mass_ess = [e for k, e in d["ess"].items() if k.startswith("lens.")]
    assert mass_ess and min(mass_ess) >= 150 and max(d["rhat"].values()) < 1.01
    assert set(d["timings"]) == {"compile", "warmup", "sampling"}
    assert all(v >= 0 for v in d["timings"].values())
    assert 1 <= d["mean_steps"] < 2**cfg.max_tree_depth


def test_nuts_that_misses_its_targets_says_so_in_one_line(nuts_case):
    cfg, problem, start = nuts_case
    cfg = dataclasses.replace(cfg, num_samples=100, target_ess=100000)
    with pytest.warns(UserWarning, match=r"did not reach its targets in 100 draws.*ESS\(") as w:
        res = run_nuts(jax.random.PRNGKey(5), problem, cfg, start)
    assert "\n" not in str(w[0].message)
    assert res.diagnostics["converged"] is False


def test_compiled_programs_belong_to_the_problem_and_are_reused(nuts_case):
    from lensgen.infer.run import with_data

    cfg, problem, _ = nuts_case
    other = with_data(problem, blob_observation(seed=7))
    assert other.programs is problem.programs
    before = problem.programs.compile_seconds
    find_map(jax.random.PRNGKey(0), other, cfg)
    assert problem.programs.compile_seconds == before  # nothing recompiled
    # The Adam program takes its step count and rate at run time: the screen, the
    # restarts and any other schedule share it.
    shorter = dataclasses.replace(cfg, map_steps=cfg.map_steps // 4 + 1, map_lr=cfg.map_lr / 2)
    find_map(jax.random.PRNGKey(1), other, shorter)
    assert problem.programs.compile_seconds == before


def test_map_and_svi_report_no_divergence_count(nuts_case):
    from lensgen.infer.report import summary
    from lensgen.infer.run import run_svi

    cfg, problem, start = nuts_case
    assert "divergences" not in start.as_result().diagnostics
    res = run_svi(jax.random.PRNGKey(6), problem, dataclasses.replace(cfg, svi_steps=50), start)
    assert "divergences" not in res.diagnostics
    assert "divergences" not in summary(res).columns


@pytest.mark.parametrize("guide", ["AutoNormal", "AutoMultivariateNormal"])
def test_svi_guides_start_at_the_laplace_approximation_and_compile_once(nuts_case, guide):
    """With no steps the draws are the Laplace approximation's (its full covariance, or
    its diagonal); more steps at another rate reuse the compiled program and keep the
    posterior near it (the stand-in case is close to Gaussian)."""
    from jax.flatten_util import ravel_pytree

    from lensgen.infer.mapfit import model_functions

    cfg, problem, start = nuts_case
    cfg = dataclasses.replace(cfg, svi_guide=guide, svi_steps=0, svi_samples=4000)
    # Reference: draws of the Laplace approximation, mapped to the parameters.
    flat, unravel = ravel_pytree(start.mode.x)
    cov = start.mode.cov if guide == "AutoMultivariateNormal" else np.diag(np.diag(start.mode.cov))
    x = np.random.default_rng(0).multivariate_normal(np.asarray(flat), cov, 4000)
    constrain = model_functions(problem).constrain
    ref = jax.vmap(lambda v: constrain(unravel(v), problem.data))(jnp.asarray(x))
    # The two most correlated parameters of the full Laplace approximation.
    scalars = [k for k, v in ref.items() if v.ndim == 1 and np.std(v) > 0]
    full = jax.vmap(lambda v: constrain(unravel(v), problem.data))(
        jnp.asarray(np.random.default_rng(1).multivariate_normal(flat, start.mode.cov, 4000))
    )
    corr = np.abs(np.corrcoef(np.stack([np.asarray(full[k]) for k in scalars])))
    i, j = np.unravel_index(np.argmax(corr - np.eye(len(scalars))), corr.shape)
    names = (scalars[i], scalars[j])

    def moments(samples):
        v = np.stack([np.asarray(samples[k]).reshape(-1) for k in names])
        return v.mean(axis=1), v.std(axis=1), np.corrcoef(v)[0, 1]

    mean_ref, sd_ref, corr_ref = moments(ref)
    res = run_svi(jax.random.PRNGKey(6), problem, cfg, start)
    mean, sd, corr = moments(res.samples)
    assert np.all(np.abs(mean - mean_ref) < 0.1 * sd_ref)  # 4.5 Monte Carlo σ
    np.testing.assert_allclose(sd, sd_ref, rtol=0.08)
    assert corr == pytest.approx(corr_ref, abs=0.06)
    if guide == "AutoMultivariateNormal":
        assert abs(corr_ref) > 0.3  # the test needs a correlation to keep

    run = dataclasses.replace(cfg, svi_steps=120, svi_lr=cfg.svi_lr / 3)
    res = run_svi(jax.random.PRNGKey(7), problem, run, start)
    elbo = res.diagnostics["elbo"]
    assert elbo.shape == (120,) and np.isfinite(elbo).all()
    np.testing.assert_allclose(moments(res.samples)[1], sd_ref, rtol=0.3)
    before = problem.programs.compile_seconds
    run = dataclasses.replace(cfg, svi_steps=30, svi_lr=cfg.svi_lr * 2, svi_samples=100)
    run_svi(jax.random.PRNGKey(8), problem, run, start)
    assert problem.programs.compile_seconds == before  # steps, rate and draws are inputs


def test_chains_one_after_another_equal_chains_in_lockstep(nuts_case):
    """The CPU layout of the NUTS chains (one after another in one program) makes the
    same transitions as the accelerator layout (vmapped in lockstep)."""
    from jax.flatten_util import ravel_pytree

    from lensgen.infer.samplers import NutsSettings, _nuts_program, chains_in_lockstep

    cfg, problem, start = nuts_case
    assert chains_in_lockstep() is (jax.default_backend() != "cpu")
    flat, unravel = ravel_pytree(start.mode.x)
    offsets = 1e-3 * jnp.arange(2.0)[:, None] * jnp.sqrt(jnp.diag(start.mode.cov))
    x0 = jax.vmap(unravel)(flat + offsets)
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    runs = []
    for lockstep in (True, False):
        settings = NutsSettings.from_config(cfg)._replace(lockstep=lockstep)
        build = functools.partial(_nuts_program, problem, settings)
        init, advance, _ = problem.programs.get(settings, build)  # the CPU's is compiled
        states = init(keys, x0, jnp.asarray(start.mode.cov), problem.data)
        runs.append(advance(states, problem.data, 5)[1])
    (z_lock, *_, steps_lock), (z_seq, *_, steps_seq) = runs
    np.testing.assert_array_equal(steps_lock[:5], steps_seq[:5])
    assert steps_lock[:5].max() > 1  # trajectories, not single steps
    for name in z_lock:
        np.testing.assert_allclose(z_seq[name][:5], z_lock[name][:5], rtol=1e-9, atol=1e-12)


def test_the_stopping_rule_waits_for_the_mass_ess_and_every_r_hat():
    """ESS ≥ target is asked of the mass parameters only; R-hat < 1.01 of all."""
    from lensgen.infer.samplers import _targets_met

    ess = {"lens.0.theta_E": 900.0, "lens.0.center_x": 450.0, "source.0.size": 120.0}
    rhat = {"lens.0.theta_E": 1.001, "lens.0.center_x": 1.002, "source.0.size": 1.008}
    assert _targets_met(ess, rhat, 400)
    assert not _targets_met(ess, rhat, 500)  # lens.0.center_x short of it
    assert not _targets_met(ess, {**rhat, "source.0.size": 1.02}, 400)
    with_subhalo = ({**ess, "subhalo.0.log10_m": 300.0}, {**rhat, "subhalo.0.log10_m": 1.0})
    assert not _targets_met(*with_subhalo, 400)  # a subhalo is a mass parameter too
    # Without a lens site (a light-only model) every site's ESS counts.
    assert not _targets_met({"source.0.size": 120.0}, {"source.0.size": 1.0}, 400)


def test_warmup_trees_stop_at_their_own_depth(nuts_case):
    """``max_tree_depth_warmup`` caps the warm-up's trees; sampling gets the full depth."""
    from jax.flatten_util import ravel_pytree

    from lensgen.infer.samplers import NutsSettings, _nuts_program

    cfg, problem, start = nuts_case
    cfg = dataclasses.replace(cfg, num_warmup=40, max_tree_depth_warmup=1)  # one stage
    settings = NutsSettings.from_config(cfg)
    assert settings.max_tree_depth == (1, cfg.max_tree_depth)
    assert NutsSettings.from_config(
        dataclasses.replace(cfg, max_tree_depth_warmup=12)
    ).max_tree_depth == (cfg.max_tree_depth, cfg.max_tree_depth)  # never deeper than sampling
    init, advance, _ = problem.programs.get(
        settings, functools.partial(_nuts_program, problem, settings)
    )
    flat, unravel = ravel_pytree(start.mode.x)
    x0 = jax.vmap(unravel)(jnp.stack([flat, flat]))
    states = init(jax.random.split(jax.random.PRNGKey(9), 2), x0,
                  jnp.asarray(start.mode.cov), problem.data)  # fmt: skip
    states, warm = advance(states, problem.data, settings.num_warmup)
    states, draws = advance(states, problem.data, 10)
    np.testing.assert_array_equal(warm[4][: settings.num_warmup], 1)  # one leapfrog step
    assert draws[4][:10].max() > 1


def test_tree_depths_outside_1_to_15_are_refused():
    with pytest.raises(LensgenError, match="max_tree_depth_warmup must be in 1..15, got 0"):
        dataclasses.replace(FAST, max_tree_depth_warmup=0)


def test_a_stuck_chain_is_one_warning_and_a_captioned_corner_plot(tmp_path, capsys):
    """Draws that never moved (a chain started in a bad mode) give one warning line and a
    corner figure that says so, instead of a matplotlib error about a 0 × 0 grid."""
    from rich.console import Console

    from lensgen.infer.report import corner_plot, warn_if_stuck
    from lensgen.infer.run import InferenceResult

    stuck = InferenceResult("nuts", {"lens.0.theta_E": np.full((1, 20), 2.1)}, {}, {}, {})
    warn_if_stuck(stuck, Console(force_terminal=False, width=200))
    assert "every nuts draw is the same point" in capsys.readouterr().out
    path = corner_plot(stuck, {"lens.0.theta_E": 2.3}, tmp_path / "corner.png", overwrite=False)
    assert path.stat().st_size > 0
    moving = InferenceResult("nuts", {"lens.0.theta_E": np.linspace(2.2, 2.4, 20)[None]}, {}, {}, {})
    warn_if_stuck(moving, Console(force_terminal=False, width=200))
    assert capsys.readouterr().out == ""
