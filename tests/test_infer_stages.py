"""The inference stages: source placement, data-driven starts and the refined mass
matrix (early stopping and what the results report are in test_infer_run.py, on its
MAP fit)."""

import jax.numpy as jnp
import numpy as np
import pytest
from blob_case import FAST, TRUTH, BlobSource, blob_observation

from lensgen.infer.run import build_problem
from lensgen.infer.samplers import refined_inverse_mass
from lensgen.infer.starts import estimate_geometry, source_moments
from lensgen.lensing.light import interpolated
from lensgen.source.model import core_moments, interpol_params, light_moments


def _rendered(stamp, flux, cx, cy, size, phi):
    """Light of the placed stamp on a fine grid: (light per cell, x, y)."""
    p = interpol_params(jnp.asarray(stamp), flux, cx, cy, size, phi)
    h = 0.002
    x = (np.arange(1000) - 499.5) * h
    xx, yy = np.meshgrid(x, x)
    return np.asarray(interpolated(xx, yy, **p)) * h * h, xx, yy


@pytest.mark.parametrize("phi", [0.0, 0.7, -2.1])
def test_the_rendered_source_has_the_requested_centroid_and_core(phi):
    """Exact: the placed stamp's pixels sit where a grid turned by ``phi``, of pixel
    scale ``size`` / r_c, with its d^(3/2)-weighted centroid at (center_x, center_y),
    puts them, with surface brightness ``flux`` d / (F_c s²); the source integrates to
    ``flux`` Σd / F_c (core flux F_c and radius r_c of the stamp, core_moments)."""
    rng = np.random.default_rng(0)
    stamp = BlobSource().decode(jnp.asarray([0.3, 0.8])) * (1 + 0.2 * rng.random((24, 24)))
    core, _, _, r_core = (float(a) for a in core_moments(jnp.asarray(stamp)))
    scale = 0.16 / r_core
    # Each pixel's offset from the d^1.5-weighted centroid, turned by phi, in arcsec.
    v, u = np.meshgrid(np.arange(24) - 11.5, np.arange(24) - 11.5, indexing="ij")
    w = stamp**1.5
    du, dv = u - (w * u).sum() / w.sum(), v - (w * v).sum() / w.sum()
    x = 0.11 + scale * (np.cos(phi) * du - np.sin(phi) * dv)
    y = -0.23 + scale * (np.sin(phi) * du + np.cos(phi) * dv)
    p = interpol_params(jnp.asarray(stamp), 37.0, 0.11, -0.23, 0.16, phi)
    inner = (slice(1, -1), slice(1, -1))  # nodes whose bilinear cell is inside the stamp
    np.testing.assert_allclose(np.asarray(interpolated(x[inner], y[inner], **p)),
                               37.0 * stamp[inner] / (core * scale**2), rtol=1e-9)  # fmt: skip
    light, xx, yy = _rendered(stamp, 37.0, 0.11, -0.23, 0.16, phi)
    total = light.sum()
    assert total == pytest.approx(37.0 * float(np.sum(stamp)) / core, rel=2e-5)
    # The interpolant's RMS radius is the stamp's, in arcsec at scale size / r_c.
    cx, cy = (light * xx).sum() / total, (light * yy).sum() / total
    rms = np.sqrt((light * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / total)
    r_rms = float(light_moments(jnp.asarray(stamp))[3])
    assert rms == pytest.approx(r_rms * 0.16 / r_core, rel=1e-5)


def test_the_core_of_a_gaussian_galaxy_is_its_total_flux_and_rms_radius():
    """For a Gaussian galaxy the core flux and radius are its total flux and RMS radius;
    faint wings added to it change the total and RMS radius a lot, the core little."""
    v, u = np.meshgrid(np.arange(48) - 23.5, np.arange(48) - 23.5, indexing="ij")
    gauss = np.exp(-0.5 * ((u - 1.3) ** 2 + (v + 0.7) ** 2) / 3.5**2)
    light, xx, yy = _rendered(gauss, 50.0, 0.05, 0.03, 0.18, 0.4)
    total = light.sum()
    rms = np.sqrt((light * ((xx - 0.05) ** 2 + (yy - 0.03) ** 2)).sum() / total)
    assert total == pytest.approx(50.0, rel=1e-6)
    assert rms == pytest.approx(0.18, rel=1e-6)
    wings = gauss + 0.02 * np.exp(-np.hypot(u, v) / 10.0)  # 2 % of the peak
    total_w, _, _, rms_w = (float(a) for a in light_moments(jnp.asarray(wings)))
    core_w, _, _, core_r = (float(a) for a in core_moments(jnp.asarray(wings)))
    total_g, _, _, rms_g = (float(a) for a in light_moments(jnp.asarray(gauss)))
    # 12 % more light and a 38 % larger RMS radius, but a core within 2.5 %.
    assert total_w / total_g > 1.1 and rms_w / rms_g > 1.35
    assert core_w / total_g == pytest.approx(1.0, abs=0.025)
    assert core_r / rms_g == pytest.approx(1.0, abs=0.025)


def test_a_latent_that_only_resizes_the_galaxy_leaves_the_image_unchanged():
    """The redundancy the parametrisation removes: z[0] scales the blob, size pins the light."""
    x = jnp.linspace(-0.6, 0.6, 121)
    xx, yy = jnp.meshgrid(x, x)
    v, u = jnp.meshgrid(jnp.arange(24) - 11.5, jnp.arange(24) - 11.5, indexing="ij")

    def image(z0, size):
        width = 3.0 * jnp.exp(0.3 * z0)  # a latent that resizes the decoded galaxy
        decoded = jnp.exp(-0.5 * ((u / (1.2 * width)) ** 2 + (v / width) ** 2))
        return interpolated(xx, yy, **interpol_params(decoded, 40.0, 0.1, 0.0, size))

    ia, ib = image(0.0, 0.15), image(0.5, 0.15)
    # Equal up to the blob's truncation at the stamp edge and the bilinear interpolation,
    assert float(jnp.abs(ia - ib).max()) < 0.03 * float(ia.max())
    # where the same latent change at a fixed pixel scale would resize the galaxy by 16 %.
    grown = image(0.0, 0.15 * float(jnp.exp(0.15)))
    assert float(jnp.abs(ia - grown).max()) > 0.2 * float(ia.max())


def test_starts_read_the_lens_and_source_off_the_image():
    problem = build_problem(FAST, blob_observation(), BlobSource())
    theta, cx, cy = estimate_geometry(problem)
    assert theta == pytest.approx(2.3, rel=0.1)
    m = source_moments(problem, 2.3, TRUTH["lens.0.center_x"], TRUTH["lens.0.center_y"])
    assert (m.center_x, m.center_y) == pytest.approx((0.08, 0.05), abs=0.05)
    assert m.flux == pytest.approx(40.0, rel=0.3)
    assert m.size == pytest.approx(TRUTH["source.0.size"], rel=0.5)


def test_refined_mass_matrix_recovers_the_draws_covariance():
    rng = np.random.default_rng(1)
    true = np.array([[4e-8, 1e-8, 0.0], [1e-8, 9e-8, 0.0], [0.0, 0.0, 2.0]])
    draws = rng.multivariate_normal(np.zeros(3), true, size=20000)
    laplace = np.diag([1e-8, 1e-8, 1.0])  # right order of magnitude, wrong shape
    refined = refined_inverse_mass(laplace, draws)
    np.testing.assert_allclose(np.diag(refined), np.diag(true), rtol=0.05)
    sd, sd_true = np.sqrt(np.diag(refined)), np.sqrt(np.diag(true))
    np.testing.assert_allclose(refined / np.outer(sd, sd), true / np.outer(sd_true, sd_true),
                               atol=0.03)  # fmt: skip
    # Few draws: shrunk towards the Laplace covariance, never singular.
    few = refined_inverse_mass(laplace, draws[:3])
    assert np.all(np.linalg.eigvalsh(few) > 0)


def test_the_placement_has_finite_curvature_where_the_stamp_is_exactly_dark():
    """A ReLU decoder gives pixels of exactly 0, where d^(3/2) has an infinite second
    derivative; the MAP's Newton polish needs a finite Hessian there."""
    import jax

    stamp = jnp.asarray([[0.0, 1.0, 2.0], [0.0, 3.0, 0.5], [-0.1, 0.0, 1.0]])

    def placed(d):
        return sum(core_moments(d))

    assert np.all(np.isfinite(np.asarray(jax.hessian(placed)(stamp))))
    assert np.all(np.isfinite(np.asarray(jax.grad(placed)(stamp))))
