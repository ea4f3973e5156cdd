"""The marginalised sources (pixel grid, shapelets): bases against lenstronomy, the
Gaussian integral done right, and lens recovery on sources unlike the training galaxies."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clumpy_sources import lensed_observation
from lenstronomy.LightModel.light_model import LightModel
from scipy.stats import multivariate_normal
from test_render import LENS, PSF_KERNEL, _lenstronomy_image, _scene

from lensgen.errors import ConfigError, LensgenError
from lensgen.infer.linear import marginalise, precision
from lensgen.infer.mapfit import model_functions, prior_draws
from lensgen.infer.run import InferConfig, build_problem, find_map, render_values
from lensgen.lensing.pixelgrid import gradient_regulariser, grid_basis, grid_interpol
from lensgen.lensing.render import make_basis_renderer, render
from lensgen.lensing.shapelets import num_shapelets, shapelet_order, shapelet_set


@pytest.mark.parametrize("seed", range(3))
def test_shapelet_set_matches_lenstronomy_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n_max = int(rng.integers(0, 15))
    amp = rng.normal(size=num_shapelets(n_max))
    beta, cx, cy = rng.uniform(0.05, 0.5), *rng.uniform(-0.3, 0.3, 2)
    x, y = rng.uniform(-1.5, 1.5, (2, 400))
    ref = LightModel(["SHAPELETS"]).surface_brightness(
        x, y, [dict(amp=amp, n_max=n_max, beta=beta, center_x=cx, center_y=cy)]
    )
    ours = np.asarray(shapelet_set(x, y, amp, beta, cx, cy))
    assert np.max(np.abs(ours - ref)) <= 1e-10 * max(np.max(np.abs(ref)), 1.0)


def test_shapelet_functions_are_orthonormal():
    """∫ S_j S_k dx dy = β² δ_jk (the dimensionless functions of Refregier 2003, eq. 6)."""
    beta, n_max = 0.2, 6
    h = 0.01
    x, y = np.meshgrid(*(np.arange(-2.5, 2.5, h),) * 2)
    from lensgen.lensing.shapelets import shapelet_basis

    basis = np.asarray(shapelet_basis(x, y, n_max, beta)).reshape(num_shapelets(n_max), -1)
    gram = basis @ basis.T * h * h / beta**2
    np.testing.assert_allclose(gram, np.eye(num_shapelets(n_max)), atol=1e-8)


def test_amplitude_count_must_be_a_full_set():
    assert shapelet_order(45) == 8
    with pytest.raises(LensgenError, match="not a full set"):
        shapelet_order(44)


def test_lensed_shapelets_match_lenstronomy_image_model():
    rng = np.random.default_rng(4)
    amp = rng.normal(size=num_shapelets(5))
    source = [{"amp": amp, "beta": 0.15, "center_x": 0.05, "center_y": -0.03}]
    ours = render(_scene(2, source=("SHAPELETS",)), {"lens": LENS, "source": source}, PSF_KERNEL)
    ref = _lenstronomy_image(2, ("SHAPELETS",), [{**source[0], "n_max": 5}])
    assert np.max(np.abs(np.asarray(ours) - ref)) <= 1e-8 * np.max(np.abs(ref))


def test_basis_images_are_the_linear_map_of_the_render():
    rng = np.random.default_rng(5)
    amp = rng.normal(size=num_shapelets(4))
    scene = _scene(2, source=("SHAPELETS",))
    basis = make_basis_renderer(scene, "shapelets", 4, PSF_KERNEL)(LENS, 0.2, 0.02, 0.01)
    source = [{"amp": amp, "beta": 0.2, "center_x": 0.02, "center_y": 0.01}]
    direct = render(scene, {"lens": LENS, "source": source}, PSF_KERNEL)
    np.testing.assert_allclose(np.tensordot(amp, basis, axes=1), direct, atol=1e-12)


@pytest.mark.parametrize("supersample", [1, 2])
def test_grid_basis_is_the_linear_map_of_the_interpol_render(supersample):
    """Σ_k s_k B_k equals lenstronomy's INTERPOL of the node image (binned tents included)."""
    rng = np.random.default_rng(6)
    nodes = rng.uniform(0, 5, 36)
    scene = _scene(supersample, source=("INTERPOL",))
    basis = make_basis_renderer(scene, "pixels", 6, PSF_KERNEL)(LENS, 0.3, 0.04, -0.02)
    source = [grid_interpol(jnp.asarray(nodes), 0.3, 0.04, -0.02)]
    direct = render(scene, {"lens": LENS, "source": source}, PSF_KERNEL)
    np.testing.assert_allclose(np.tensordot(nodes, basis, axes=1), direct, atol=1e-12)
    ref = _lenstronomy_image(
        supersample, ("INTERPOL",), [{**source[0], "image": nodes.reshape(6, 6)}]
    )
    assert np.max(np.abs(np.asarray(direct) - ref)) <= 1e-8 * np.max(ref)


def test_grid_tents_sum_to_one_inside_the_grid():
    x, y = np.random.default_rng(8).uniform(-0.29, 0.29, (2, 200))
    tents = np.asarray(grid_basis(jnp.asarray(x), jnp.asarray(y), 7, 0.3))
    np.testing.assert_allclose(tents.sum(axis=0), 1.0, atol=1e-12)
    assert np.all(tents >= 0)


def test_gradient_regulariser_is_the_squared_differences():
    """sᵀRs = Σ (neighbour differences)², zero beyond the edge; R is positive definite."""
    n = 5
    s = np.random.default_rng(9).normal(size=(n, n))
    padded = np.pad(s, 1)
    energy = np.sum(np.diff(padded[1:-1], axis=1) ** 2) + np.sum(
        np.diff(padded[:, 1:-1], axis=0) ** 2
    )
    r = gradient_regulariser(n)
    assert s.ravel() @ r @ s.ravel() == pytest.approx(energy, rel=1e-12)
    assert np.linalg.eigvalsh(r).min() > 0


def _random_problem(seed, k=4, shape=(5, 6)):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(k, *shape))
    sigma = rng.uniform(0.5, 2.0, shape)
    mask = rng.uniform(size=shape) > 0.2
    residual = rng.normal(size=shape) * 2
    return basis, residual, sigma, mask


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("regulariser", ["identity", "gradient"])
def test_marginal_likelihood_is_the_gaussian_integral(seed, regulariser):
    """log N(r; 0, C + Gᵀ(λR)⁻¹G) over the used pixels, computed as a dense Gaussian."""
    basis, residual, sigma, mask = _random_problem(seed)
    lam = 0.7
    r = np.eye(4) if regulariser == "identity" else gradient_regulariser(2)
    weight = np.where(mask, sigma**-2.0, 0.0)
    fit = marginalise(jnp.asarray(basis), jnp.asarray(residual), jnp.asarray(weight), lam,
                      r, np.linalg.slogdet(r)[1])  # fmt: skip
    norm = -np.sum(np.log(sigma[mask])) - 0.5 * mask.sum() * math.log(2 * math.pi)
    g = basis.reshape(len(basis), -1)[:, mask.ravel()]
    cov = np.diag(sigma[mask] ** 2) + g.T @ np.linalg.inv(lam * r) @ g
    expected = multivariate_normal(np.zeros(mask.sum()), cov).logpdf(residual[mask])
    assert float(fit.log_evidence) + norm == pytest.approx(expected, rel=1e-10)
    # The amplitudes are the posterior mean: they solve (G W Gᵀ + λR) a = G W r.
    a = np.asarray(fit.amplitudes)
    lhs = (g * sigma[mask] ** -2) @ g.T @ a + lam * r @ a
    np.testing.assert_allclose(lhs, (g * sigma[mask] ** -2) @ residual[mask], rtol=1e-10)


def test_marginal_likelihood_gradient_matches_finite_differences():
    basis, residual, sigma, mask = _random_problem(7)
    weight = jnp.where(jnp.asarray(mask), jnp.asarray(sigma) ** -2, 0.0)

    def f(p):
        scale, log_lam = p
        return marginalise(scale * jnp.asarray(basis), jnp.asarray(residual), weight,
                           jnp.exp(log_lam)).log_evidence  # fmt: skip

    p = jnp.array([1.3, -0.4])
    grad = np.asarray(jax.grad(f)(p))
    eps = 1e-6
    fd = [(f(p + eps * e) - f(p - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(grad, np.asarray(fd), rtol=1e-6)


def test_precision_is_relative_to_the_noise_and_pixel():
    """ρ = 1 means amplitudes of prior width σ̄/Δ² (module docstring of lensgen.infer.linear)."""
    weight = jnp.where(jnp.arange(10) < 8, 4.0, 0.0)  # σ = 0.5 on 8 used pixels
    assert float(precision(1.0, weight, 0.1)) == pytest.approx(0.1**4 / 0.25)


@pytest.fixture(scope="module")
def clumpy():
    obs, _ = lensed_observation(seed=0, npix=40, pixel_scale=0.133)
    return obs


def _fit_clumpy(obs, source: str, grid: int, restarts: int, steps: int):
    config = InferConfig(source=source, lens=("SIE", "SHEAR"), method="map",
                         map_restarts=restarts, map_steps=steps, source_grid=grid)  # fmt: skip
    problem = build_problem(config, obs)
    result = find_map(jax.random.key(0), problem, config)
    theta = float(result.point["lens.0.theta_E"])
    # The reconstructed model is the rest + the most probable source, as rendered.
    params, model = render_values(problem, result.point)
    np.testing.assert_allclose(model, problem.renderer(params), rtol=1e-8, atol=1e-10)
    return result.chi2, theta / obs.truth["lens.0.theta_E"] - 1


@pytest.mark.slow
def test_pixel_source_fits_a_clumpy_galaxy_and_recovers_the_lens(clumpy):
    """Small version of benchmarks/bench_real_sources.py: a non-parametric galaxy lensed
    by lenstronomy, MAP with the marginalised pixel grid: θ_E within 1 % and χ²/N
    below what the smooth Sérsic reaches on such data (2.7, BENCHMARKS.md, issue 13)."""
    chi2, error = _fit_clumpy(clumpy, "pixels", grid=16, restarts=2, steps=300)
    assert abs(error) < 0.01
    assert chi2 < 2.5


def test_regularisation_prior_must_be_positive(tmp_path, clumpy):
    priors = tmp_path / "priors.toml"
    priors.write_text('[priors]\n"source.0.reg" = "Normal(0.0, 1.0)"\n')
    with pytest.raises(ConfigError, match=r"source.0.reg .*outside the domain reg"):
        build_problem(InferConfig(source="pixels", priors=str(priors)), clumpy)
    priors.write_text('[priors]\n"source.0.reg" = "Uniform(-1.0, 1.0)"\n')
    with pytest.raises(ConfigError, match="source.0.reg"):
        build_problem(InferConfig(source="shapelets", priors=str(priors)), clumpy)


def test_basis_sizes_are_checked():
    with pytest.raises(ConfigError, match="shapelet_order must be in 0..30, got 31"):
        InferConfig(shapelet_order=31)
    with pytest.raises(ConfigError, match=r"source_grid must be in 3..100 \(nodes a side\), got 2"):
        InferConfig(source_grid=2)


def test_potential_is_finite_at_prior_draws(clumpy):
    problem = build_problem(InferConfig(source="vae+pixels", source_grid=8), clumpy)
    xs = prior_draws(jax.random.key(2), problem, 4)
    potential = model_functions(problem).potential
    values = [float(potential(jax.tree_util.tree_map(lambda a, i=i: a[i], xs), problem.data))
              for i in range(4)]  # fmt: skip
    assert np.all(np.isfinite(values))


def test_source_grid_larger_than_the_image_is_refused():
    obs, _ = lensed_observation(seed=1, npix=12, pixel_scale=0.4)
    with pytest.raises(
        LensgenError,
        match=r"source grid 13 × 13 has 169 amplitudes, more than "
        r"the image's 144 used pixels can constrain; use --source-grid ≤ 12",
    ):
        build_problem(InferConfig(source="pixels", source_grid=13), obs)


def test_pixel_source_recovers_the_lens_and_wins_the_evidence_toy():
    """Toy size (24 × 24 px, 8 × 8 grid, two restarts) of the slow pixel-source test
    above and of ``--compare-sources``: the free-form source finds θ_E within 1 % and
    fits the clumpy galaxy far better than a smooth Sérsic (χ²/N 4.7 against 36 at the
    two MAPs), its evidence wins, and the table says so. The reconstructed model is
    the rest plus the most probable source, as rendered."""
    from lensgen.infer.compare import compare_sources, evidence_rows

    obs, _ = lensed_observation(seed=1, npix=24, pixel_scale=0.22, background_rms=0.2)
    config = InferConfig(lens=("SIE", "SHEAR"), method="map", map_restarts=2, map_steps=200,
                         source_grid=8)  # fmt: skip
    with warnings.catch_warnings():  # the Sérsic's MAP is warned about its χ²/N
        warnings.simplefilter("ignore", UserWarning)
        fits = compare_sources(jax.random.key(0), config, obs, sources=("SERSIC_ELLIPSE", "pixels"))
    rows = {r["source"]: r for r in evidence_rows(fits)}
    assert rows["pixels"]["delta_log_evidence"] == 0.0
    assert rows["SERSIC_ELLIPSE"]["delta_log_evidence"] < -10
    assert rows["pixels"]["n_parameters"] == 7 + 4  # SIE + SHEAR, centre, width, reg
    pixels = fits[1]
    assert abs(rows["pixels"]["theta_E"] / obs.truth["lens.0.theta_E"] - 1) < 0.01
    assert pixels.map.chi2 < 8.0
    params, model = render_values(pixels.problem, pixels.map.point)
    np.testing.assert_allclose(model, pixels.problem.renderer(params), rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_compare_sources_through_the_cli(tmp_path):
    """``lensgen infer --compare-sources`` writes the evidence table and a best fit per source."""
    from astropy.io import fits as pyfits
    from conftest import run_cli

    from lensgen.io.fits import write_observation

    obs, _ = lensed_observation(seed=1, npix=24, pixel_scale=0.22, background_rms=0.2)
    write_observation(tmp_path / "obs.fits", obs)
    res = run_cli("infer", tmp_path / "obs.fits", "--method", "map", "--compare-sources",
                  "--map-restarts", 1, "--map-steps", 100, "--source-grid", 8,
                  "--lens", "SIE,SHEAR", "-o", tmp_path / "out")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Δ log Z" in res.output
    table = (tmp_path / "out" / "evidence.csv").read_text().splitlines()
    assert table[0].startswith("source,log_evidence,delta_log_evidence,chi2,theta_E")
    assert [line.split(",")[0] for line in table[1:]] == ["vae", "pixels", "vae+pixels"]
    for source in ("vae", "pixels", "vae+pixels"):
        assert (tmp_path / "out" / f"bestfit_{source}.png").stat().st_size > 0
    assert pyfits.getdata(tmp_path / "obs.fits").shape == (24, 24)
