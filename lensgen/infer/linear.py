"""Linear source amplitudes marginalised analytically (semi-linear inversion).

A source whose surface brightness is Σ_k a_k S_k(β) (a shapelet set,
:mod:`lensgen.lensing.shapelets`, or a pixel grid, :mod:`lensgen.lensing.pixelgrid`)
enters the model image linearly:
d = m₀ + Gᵀa + n, where m₀ is everything else (the learned source, the lens light),
the rows of G are the lensed, binned and PSF-convolved basis images, and
n ~ N(0, C) with C diagonal (σ² per used pixel). With the Gaussian prior
a ~ N(0, (λR)⁻¹) (R = I for shapelets, the gradient regulariser for a grid) the
amplitudes integrate out exactly (Warren & Dye 2003; Suyu et al. 2006, eqs. 5–19).
With r = d − m₀, W = C⁻¹ (zero on masked pixels),

    F = G W Gᵀ + λ R,    b = G W r,    â = F⁻¹ b,

    log p(d | nonlinear parameters, λ)
        = −½ (rᵀ W r − bᵀ â) − ½ log det F + ½ log det(λR) − ½ Σ log(2π σ²),

where −½(rᵀWr − bᵀâ) = −½ χ²(â) − ½ λ âᵀRâ is the best fit's penalised χ². The
samplers see only this function of the lens, source-geometry and regularisation
parameters; ``â`` is the most probable source given them.

The prior precision is written λ = ρ Δ⁴/σ̄², with Δ the pixel size and σ̄² = N/Σ W
the mean noise variance: an amplitude a puts about a Δ² counts/s in a pixel, so
ρ = 1 gives amplitudes a prior width of about one noise σ per pixel. ρ
(``source.0.reg``) is inferred.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LinearFit(NamedTuple):
    """The marginalised linear part: ``log_evidence`` (the log marginal likelihood),
    the most probable ``amplitudes`` â and their model ``image`` Gᵀâ."""

    log_evidence: jax.Array
    amplitudes: jax.Array
    image: jax.Array


def precision(reg, weight, pixel_scale: float):
    """λ = ρ Δ⁴/σ̄² (module docstring) for regularisation ρ, weights W = mask/σ²."""
    mean_variance = jnp.sum(weight > 0) / jnp.sum(weight)
    return reg * pixel_scale**4 / mean_variance


def marginalise(basis, residual, weight, lam, regulariser=None, log_det_reg=0.0) -> LinearFit:
    """Integrate out amplitudes a ~ N(0, (λR)⁻¹) of ``basis`` (module docstring).

    Parameters
    ----------
    basis : array, shape (K, ny, nx)
        Model image of each basis function at unit amplitude (counts/s per pixel).
    residual : array, shape (ny, nx)
        Data minus the rest of the model, r.
    weight : array, shape (ny, nx)
        1/σ² on used pixels, 0 on masked ones.
    lam : float
        Prior precision λ of the amplitudes.
    regulariser : array, shape (K, K), optional
        R (positive definite); the identity when None.
    log_det_reg : float
        log det R (0 for the identity).

    Returns
    -------
    LinearFit
        The log marginal likelihood without the −½ Σ log 2πσ² normalisation (a
        constant of the data, added by the caller), â and Gᵀâ.
    """
    k = basis.shape[0]
    g = basis.reshape(k, -1)
    gw = g * weight.reshape(1, -1)
    r = residual.reshape(-1)
    reg = jnp.eye(k, dtype=g.dtype) if regulariser is None else jnp.asarray(regulariser, g.dtype)
    curvature = gw @ g.T + lam * reg
    rhs = gw @ r
    chol = jnp.linalg.cholesky(curvature)
    amplitudes = jax.scipy.linalg.cho_solve((chol, True), rhs)
    chi2_term = jnp.sum(weight * residual**2) - rhs @ amplitudes
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    log_evidence = -0.5 * chi2_term - 0.5 * log_det + 0.5 * (k * jnp.log(lam) + log_det_reg)
    image = jnp.tensordot(amplitudes, basis, axes=1)
    return LinearFit(log_evidence, amplitudes, image)
