"""Exact checks of the Newton polish, the Laplace covariance and the Laplace evidence.

On a Gaussian prior with a Gaussian likelihood the posterior is Gaussian, so the
Laplace approximation is exact: the mode, its covariance and log Z are known in
closed form (Bishop 2006, eqs. 2.113–2.117).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import multivariate_normal

from lensgen.infer.mapfit import laplace
from lensgen.infer.problem import Problem
from lensgen.infer.programs import Programs
from lensgen.infer.subhalo_modes import laplace_log_evidence

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
