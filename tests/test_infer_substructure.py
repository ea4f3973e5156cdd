"""Subhalo inference (issue 6): detection, position recovery, no false detection, outputs.

A 48×48 high-S/N SIS lens of a Sérsic source, simulated in-process with one injected
10^9.5 M☉ TNFW subhalo on the arc, and the same lens without it. One pair of compiled
problems serves both observations (``with_data``).
"""

import dataclasses
import json
import math
import warnings

import jax
import numpy as np
import pytest
from conftest import run_cli

from lensgen.errors import LensgenError
from lensgen.infer.model import parameter_names
from lensgen.infer.problem import InferConfig, with_data
from lensgen.infer.subhalo_report import write_subhalo_results
from lensgen.infer.substructure import (
    SubhaloConfig,
    build_subhalo_problems,
    fit_subhalos,
    log_likelihood,
    render_values,
    subhalo_conventions,
)
from lensgen.io.fits import read_observation, write_observation
from lensgen.lensing.halos import HaloConventions, tnfw_from_mass
from lensgen.simulate.batch import simulate_observation
from lensgen.simulate.population import SubhaloPopulation
from lensgen.simulate.scene import (
    PARAMETRIC_SOURCE,
    Component,
    InstrumentConfig,
    NoiseConfig,
    SimulateConfig,
)

LOG10_M, SUB_X, SUB_Y = 9.5, 1.2, 0.8
INFER = InferConfig(method="map", map_steps=600, map_restarts=4)
SUB = SubhaloConfig()


def simulate(seed: int, mass: float | None, **population):
    """One observation; ``mass`` (M☉) injects a subhalo at (SUB_X, SUB_Y)."""
    pop = None
    if mass is not None:
        pop = SubhaloPopulation(
            n_subhalos=0, inject_mass=(mass,), inject_x=(SUB_X,), inject_y=(SUB_Y,), **population
        )
    source = {**PARAMETRIC_SOURCE.params, "amp": 150.0, "R_sersic": 0.15}
    cfg = SimulateConfig(
        lens=(Component("SIS", {"theta_E": 1.45, "center_x": 0.0, "center_y": 0.0}),),
        source=(dataclasses.replace(PARAMETRIC_SOURCE, params=source),),
        instrument=InstrumentConfig(npix=48, pixel_scale=0.08, supersample=1, psf_fwhm=0.1),
        noise=NoiseConfig(exptime=5000.0, background_rms=0.05),
        substructure=pop,
    )
    return simulate_observation(cfg, jax.random.key(seed))[0]


@pytest.fixture(scope="module")
def fits_pair():
    obs = simulate(1, 10**LOG10_M)
    smooth, subhalo = build_subhalo_problems(INFER, SUB, obs)
    fit = fit_subhalos(jax.random.PRNGKey(0), smooth, subhalo, INFER, SUB)
    null = simulate(2, None)
    null_fit = fit_subhalos(
        jax.random.PRNGKey(0), with_data(smooth, null), with_data(subhalo, null), INFER, SUB
    )
    return obs, fit, null, null_fit


def test_model_drops_file_subhalos_and_renders_the_simulation_exactly():
    obs = simulate(3, 10**LOG10_M)
    assert obs.scene["lens"] == ["SIS", "SUBHALOS"]
    smooth, subhalo = build_subhalo_problems(INFER, SubhaloConfig(n_subhalos=2), obs)
    assert smooth.scene.lens == ("SIS",) and subhalo.scene.lens == ("SIS", "TNFW", "TNFW")
    names = parameter_names(subhalo.spec)
    assert names[-6:] == [
        f"subhalo.{k}.{p}" for k in range(2) for p in ("log10_m", "center_x", "center_y")
    ]
    assert str(subhalo.priors["subhalo.0.center_x"]) == "Uniform(-1.92, 1.92)"
    truth = {k: v for k, v in obs.truth.items() if k.startswith(("lens.", "source."))}
    truth.update({"subhalo.0.log10_m": LOG10_M, "subhalo.0.center_x": SUB_X})
    truth.update({"subhalo.0.center_y": SUB_Y, "subhalo.1.log10_m": 8.0})
    truth.update({"subhalo.1.center_x": -0.2, "subhalo.1.center_y": 0.3})
    params, model = render_values(subhalo, truth)
    expected = tnfw_from_mass(10**LOG10_M, SUB_X, SUB_Y, HaloConventions())
    for k, v in expected.items():
        assert float(params["lens"][1][k]) == pytest.approx(float(v), rel=1e-12)
    second = tnfw_from_mass(1e8, -0.2, 0.3, HaloConventions())
    assert float(params["lens"][2]["alpha_Rs"]) == pytest.approx(float(second["alpha_Rs"]))
    assert 0 < np.abs(np.asarray(model) - obs.model).max() < 0.01 * obs.model.max()
    # With one subhalo the model reproduces the simulation exactly (same TNFW, renderer).
    one = build_subhalo_problems(INFER, SUB, obs)[1]
    _, model1 = render_values(one, {k: v for k, v in truth.items() if "subhalo.1" not in k})
    np.testing.assert_allclose(np.asarray(model1), obs.model, rtol=1e-10, atol=1e-12)


def test_toy_subhalo_fit_runs_every_stage(tmp_path):
    """Toy-size version of the slow detection tests below: every stage of the subhalo
    fit (smooth MAP, scan, polish, Laplace evidence, outputs) with few steps."""
    # Two restarts (a screen of eight): one 60-step restart from a prior draw of the
    # Sérsic shape lands in a χ²/N ~ 100 side mode for some draws.
    infer = InferConfig(method="map", map_steps=60, map_restarts=2)
    sub = SubhaloConfig(n_starts=2, n_polish=1, steps=30, n_draws=200)
    obs = simulate(1, 10**LOG10_M)
    smooth, subhalo = build_subhalo_problems(infer, sub, obs)
    with warnings.catch_warnings():  # a 60-step toy MAP is warned about its χ²/N
        warnings.simplefilter("ignore", UserWarning)
        fit = fit_subhalos(jax.random.PRNGKey(0), smooth, subhalo, infer, sub)
    assert math.isfinite(fit.delta_log_evidence) and math.isfinite(fit.delta_log_likelihood)
    assert fit.posterior.samples["subhalo.0.log10_m"].size == 200
    paths = write_subhalo_results(tmp_path, fit, obs, overwrite=False)
    assert all(p.stat().st_size > 0 for p in paths.values())


@pytest.mark.slow
def test_injected_subhalo_is_detected_and_located(fits_pair):
    _, fit, _, _ = fits_pair
    assert fit.detected and fit.delta_log_evidence > SUB.threshold + 20
    assert fit.delta_log_likelihood > fit.delta_log_evidence  # the Occam factor is a cost
    post = {k: v.reshape(-1) for k, v in fit.posterior.samples.items()}
    for site, true in (("center_x", SUB_X), ("center_y", SUB_Y), ("log10_m", LOG10_M)):
        lo, hi = np.percentile(post[f"subhalo.0.{site}"], [2.5, 97.5])
        assert lo <= true <= hi, (site, lo, hi)
    x, y = (fit.subhalo_map.point[f"subhalo.0.center_{c}"] for c in "xy")
    assert math.hypot(x - SUB_X, y - SUB_Y) < 0.1
    # The subhalo absorbs the smooth fit's excess χ²: residuals become noise.
    _, resid = log_likelihood(fit.subhalo, fit.subhalo_map.point)
    assert np.nanmean(fit.residual**2) > np.nanmean(resid**2)
    assert np.nanmean(resid**2) == pytest.approx(1.0, abs=0.08)


@pytest.mark.slow
def test_no_subhalo_is_not_claimed(fits_pair):
    _, _, _, null_fit = fits_pair
    assert not null_fit.detected
    assert null_fit.delta_log_evidence < 0.0
    assert 0.0 <= null_fit.delta_log_likelihood < 6.0  # nested model: fits noise only


@pytest.mark.slow
def test_outputs_summary_and_plot(fits_pair, tmp_path):
    obs, fit, _, _ = fits_pair
    paths = write_subhalo_results(tmp_path, fit, obs, overwrite=False)
    summary = json.loads(paths["json"].read_text())
    assert summary["detected"] is True and summary["threshold"] == 5.0
    assert summary["delta_log_evidence"] == pytest.approx(fit.delta_log_evidence)
    (entry,) = summary["subhalos"]
    assert entry["truth_in_95"] and entry["position_error"] < 0.1
    assert entry["truth"]["log10_m"] == pytest.approx(LOG10_M)
    csv = paths["csv"].read_text().splitlines()
    assert csv[0] == "parameter,map,mean,sd,q2.5,q97.5,truth" and csv[-1] == "detected,1,,,,,"
    assert csv[2].startswith("subhalo.0.center_x,") and csv[2].endswith(",1.2")
    assert paths["plot"].stat().st_size > 30_000 and paths["posterior"].stat().st_size > 10_000
    with pytest.raises(LensgenError, match="exists"):
        write_subhalo_results(tmp_path, fit, obs, overwrite=False)


def test_population_from_the_file_header_and_overrides(tmp_path):
    obs = simulate(4, 1e9, z_lens=0.3, z_source=1.5, tau=8.0, cosmology="WMAP9")
    write_observation(tmp_path / "o.fits", obs)
    pop = subhalo_conventions(read_observation(tmp_path / "o.fits"), SubhaloConfig())
    assert (pop.z_lens, pop.z_source, pop.tau, pop.cosmology) == (0.3, 1.5, 8.0, "WMAP9")
    pop = subhalo_conventions(obs, SubhaloConfig(z_source=3.0, concentration=12.0))
    assert (pop.z_lens, pop.z_source, pop.concentration) == (0.3, 3.0, 12.0)
    assert subhalo_conventions(simulate(4, None), SubhaloConfig()) == HaloConventions()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"log10_m_min": 10.0, "log10_m_max": 8.0}, "subhalo mass prior bounds reversed"),
        ({"n_subhalos": 0}, "n_subhalos must be >= 1"),
        ({"z_lens": 1.0, "z_source": 0.8}, "z_source must be greater than z_lens"),
        ({"cosmology": "Planck2018"}, "unknown cosmology 'Planck2018'; choose one of"),
    ],
)
def test_bad_input_is_a_clear_error(settings, message):
    obs = simulate(5, None)
    with pytest.raises(LensgenError, match=message):
        build_subhalo_problems(INFER, SubhaloConfig(**settings), obs)


def test_cli_subhalo_search_rejects_reversed_mass_prior(tmp_path):
    obs = tmp_path / "obs.fits"
    res = run_cli(
        *[
            "simulate",
            "--npix",
            "32",
            "--pixel-scale",
            "0.2",
            "--supersample",
            "1",
            "--source",
            "sersic",
            "--no-preview",
            "--out",
            str(obs),
        ],
    )
    assert res.exit_code == 0, res.output
    res = run_cli(
        *[
            "infer",
            str(obs),
            "--subhalos",
            "1",
            "--subhalo-mass-min",
            "10",
            "--subhalo-mass-max",
            "9",
            "--out",
            str(tmp_path / "fit"),
        ],
    )
    assert res.exit_code == 1 and "bounds reversed" in res.output
    assert not (tmp_path / "fit").exists()
