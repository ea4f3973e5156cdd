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
from lensgen.source.model import interpol_params


@pytest.mark.parametrize("phi", [0.0, 0.7, -2.1])
def test_the_rendered_source_has_the_requested_flux_centroid_and_size(phi):
    """Exact: INTERPOL's bilinear interpolant of the placed stamp integrates to ``flux``,
    has its light centroid at (center_x, center_y) and RMS radius ``size``."""
    rng = np.random.default_rng(0)
    stamp = BlobSource().decode(jnp.asarray([0.3, 0.8])) * (1 + 0.2 * rng.random((24, 24)))
    p = interpol_params(jnp.asarray(stamp), 37.0, 0.11, -0.23, 0.16, phi)
    h = 0.002
    x = (np.arange(1000) - 499.5) * h
    xx, yy = np.meshgrid(x, x)
    light = np.asarray(interpolated(xx, yy, **p)) * h * h
    total = light.sum()
    cx, cy = (light * xx).sum() / total, (light * yy).sum() / total
    r = np.sqrt((light * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / total)
    assert total == pytest.approx(37.0, rel=1e-6)
    assert (cx, cy) == pytest.approx((0.11, -0.23), abs=1e-6)
    assert r == pytest.approx(0.16, rel=1e-5)


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
