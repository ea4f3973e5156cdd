"""Exact checks of the Newton polish, the Laplace covariance, the Laplace evidence,
the search for distinct modes and the geometry estimate of the MAP starts.

On a Gaussian prior with a Gaussian likelihood the posterior is Gaussian, so the
Laplace approximation is exact: the mode, its covariance and log Z are known in
closed form (Bishop 2006, eqs. 2.113–2.117).
"""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from scipy.stats import multivariate_normal

from lensgen.infer.mapfit import laplace
from lensgen.infer.model import LikelihoodData
from lensgen.infer.problem import Problem
from lensgen.infer.programs import Programs
from lensgen.infer.starts import estimate_geometry
from lensgen.infer.subhalo_config import SubhaloConfig
from lensgen.infer.subhalo_modes import find_modes, laplace_log_evidence
from lensgen.io.wcs import IDENTITY

RNG = np.random.default_rng(7)
MU_PRIOR = np.array([0.3, -1.0, 2.0])
A = RNG.normal(size=(3, 3))
S_PRIOR = A @ A.T + 0.5 * np.eye(3)
B = RNG.normal(size=(3, 3))
S_LIKE = 0.1 * (B @ B.T) + 0.05 * np.eye(3)
Y = np.array([0.9, -0.4, 1.1])


def model(y):
    x = numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MU_PRIOR), jnp.asarray(S_PRIOR)))
    numpyro.sample("y", dist.MultivariateNormal(x, jnp.asarray(S_LIKE)), obs=y)


def gaussian_problem() -> Problem:
    return Problem(
        spec=None,
        priors={},
        model=model,
        renderer=None,
        scene=None,
        data=jnp.asarray(Y),
        source_model=None,
        psf=None,
        programs=Programs(model),
    )


def test_laplace_finds_the_exact_mode_and_covariance():
    post_prec = np.linalg.inv(S_PRIOR) + np.linalg.inv(S_LIKE)
    cov = np.linalg.inv(post_prec)
    mean = cov @ (np.linalg.solve(S_PRIOR, MU_PRIOR) + np.linalg.solve(S_LIKE, Y))
    mode = laplace(gaussian_problem(), {"x": jnp.zeros(3)})
    # Newton stops once the potential changes by < 1e-4: the point is then far inside
    # the posterior's width (squared Mahalanobis distance ~1e-9), and so is the gradient.
    off = np.asarray(mode.x["x"]) - mean
    assert off @ post_prec @ off < 1e-8
    assert mode.grad @ cov @ mode.grad < 1e-8
    # The Hessian of a quadratic is its precision everywhere: the covariance is exact.
    np.testing.assert_allclose(mode.cov, cov, rtol=1e-9, atol=1e-13)
    assert np.all(mode.curvature > 0)
    np.testing.assert_allclose(np.sort(mode.curvature), np.sort(np.linalg.eigvalsh(post_prec)))


def test_laplace_evidence_is_the_exact_marginal_likelihood():
    problem = gaussian_problem()
    mode = laplace(problem, {"x": jnp.zeros(3)})
    log_z = laplace_log_evidence(problem, mode.x, mode.cov)
    exact = multivariate_normal(MU_PRIOR, S_PRIOR + S_LIKE).logpdf(Y)
    assert log_z == pytest.approx(exact, abs=1e-8)
    # and it is not an identity: a different observation gives a different evidence
    other = problem._replace(data=jnp.asarray(Y + 1.0))
    assert laplace_log_evidence(other, laplace(other, mode.x).x, mode.cov) != pytest.approx(
        log_z, abs=1e-3
    )


def double_well(data):
    """U(x, y) = (x² − 1)² + t x + 2 y²: minima near x = ±1 (the left one deeper for
    t > 0) and a saddle near x = 0, on flat (improper) priors."""
    x = numpyro.sample("subhalo.0.center_x", dist.ImproperUniform(constraints.real, (), ()))
    y = numpyro.sample("subhalo.0.center_y", dist.ImproperUniform(constraints.real, (), ()))
    numpyro.factor("well", -((x**2 - 1.0) ** 2 + data * x + 2.0 * y**2))


def test_find_modes_merges_duplicates_rejects_saddles_and_ranks_by_evidence():
    tilt = 0.1
    problem = Problem(
        spec=None, priors={}, model=double_well, renderer=None,
        scene=SimpleNamespace(pixel_scale=0.1), data=jnp.asarray(tilt), source_model=None,
        psf=None, programs=Programs(double_well),
    )  # fmt: skip
    # Two starts in the right well, one in the left, one exactly on the saddle point
    # (zero gradient, negative curvature along x: Newton cannot leave it).
    roots = np.roots([4.0, 0.0, -4.0, tilt]).real  # U_x = 4x³ − 4x + t
    saddle = float(roots[np.argmin(abs(roots))])
    starts = {
        "subhalo.0.center_x": jnp.array([1.03, 0.97, -1.02, saddle]),
        "subhalo.0.center_y": jnp.array([0.02, -0.03, 0.01, 0.0]),
    }
    final = np.array([0.0, 0.1, 0.2, -1.0])  # the saddle is tried first
    modes = find_modes(problem, starts, final, SubhaloConfig(n_polish=4))
    assert len(modes) == 2  # duplicates merged, saddle rejected
    left, right = modes  # best evidence first: the tilt lowers the left well
    assert left.point["subhalo.0.center_x"] < 0 < right.point["subhalo.0.center_x"]
    for m in modes:
        x = float(m.point["subhalo.0.center_x"])
        assert 4 * x**3 - 4 * x + tilt == pytest.approx(0.0, abs=1e-4)  # a stationary point
        assert abs(float(m.point["subhalo.0.center_y"])) < 1e-4
        u = (x**2 - 1) ** 2 + tilt * x
        exact = -u + np.log(2 * np.pi) - 0.5 * np.log((12 * x**2 - 4) * 4.0)
        assert m.log_evidence == pytest.approx(exact, abs=1e-6)
    # The deeper well is also the narrower one: the difference is less than 2t.
    assert 0 < left.log_evidence - right.log_evidence < 2 * tilt


@pytest.mark.parametrize("radius, cx, cy", [(1.7, 0.2, -0.1), (0.9, -0.3, 0.25)])
def test_estimate_geometry_reads_a_ring(radius, cx, cy):
    """A thin noiseless ring: its detected pixels give θ_E and the centre to a pixel."""
    scale, n = 0.05, 100
    xs = (np.arange(n) - (n - 1) / 2) * scale
    x, y = np.meshgrid(xs, xs)
    image = (np.abs(np.hypot(x - cx, y - cy) - radius) < 0.5 * scale).astype(float)
    image[0, 0] = 0.5  # below 3σ: not part of the ring
    data = LikelihoodData(
        jnp.asarray(image), jnp.ones(image.shape, bool), jnp.full(image.shape, 0.2),
        jnp.asarray(0.0), jnp.asarray(0.2),
    )  # fmt: skip
    scene = SimpleNamespace(pixel_scale=scale, shape=image.shape, orientation=IDENTITY)
    problem = SimpleNamespace(data=data, scene=scene)
    theta, ex, ey = estimate_geometry(problem)
    assert theta == pytest.approx(radius, abs=0.2 * scale)
    assert (ex, ey) == pytest.approx((cx, cy), abs=0.2 * scale)
    # Nothing above 3σ: no estimate.
    empty = SimpleNamespace(data=data._replace(image=jnp.zeros(image.shape)), scene=problem.scene)
    assert estimate_geometry(empty) is None
