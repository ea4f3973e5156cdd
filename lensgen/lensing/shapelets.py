"""Cartesian shapelets (Refregier 2003), lenstronomy's ``SHAPELETS`` light profile.

The one-dimensional basis functions are the Hermite functions

    φ_n(x) = [2ⁿ √π n!]^(−1/2) H_n(x) exp(−x²/2),

orthonormal on the real line, and a two-dimensional shapelet of scale β (arcsec)
centred on (x₀, y₀) is

    S_{n1,n2}(x, y) = φ_{n1}((x − x₀)/β) φ_{n2}((y − y₀)/β).

A set of order n_max holds the (n_max + 1)(n_max + 2)/2 shapelets with
n1 + n2 ≤ n_max, ordered as lenstronomy's ``ShapeletSet``: by total order
N = n1 + n2, and within it from (N, 0) down to (0, N). A set resolves scales from
about β/√(n_max + 1) to β√(n_max + 1) (Refregier 2003, §3.2): the first is its
resolution, the second the radius it reaches.

Amplitudes have the units of surface brightness (flux/arcsec²), as lenstronomy's.
The functions are evaluated with the stable three-term recurrence
φ_{n+1} = √(2/(n+1)) x φ_n − √(n/(n+1)) φ_{n−1}, so high orders neither overflow nor
lose precision, and they are safe under ``jax.jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from lensgen.errors import LensgenError


def num_shapelets(n_max: int) -> int:
    """Number of shapelets with n1 + n2 ≤ ``n_max``."""
    return (n_max + 1) * (n_max + 2) // 2


def shapelet_order(count: int) -> int:
    """The order n_max of a set of ``count`` shapelets (inverse of :func:`num_shapelets`)."""
    n_max = int(round((math.sqrt(8 * count + 1) - 3) / 2))
    if n_max < 0 or num_shapelets(n_max) != count:
        raise LensgenError(
            f"{count} shapelet amplitudes is not a full set: a set of order n has "
            "(n + 1)(n + 2)/2 (1, 3, 6, 10, 15, …)"
        )
    return n_max


def shapelet_indices(n_max: int) -> np.ndarray:
    """(n1, n2) of each shapelet of a set, in lenstronomy's order, shape (K, 2)."""
    return np.array(
        [(n1, total - n1) for total in range(n_max + 1) for n1 in range(total, -1, -1)],
        dtype=int,
    ).reshape(-1, 2)


def hermite_functions(x, n_max: int):
    """φ_0(x) … φ_{n_max}(x), stacked on a new leading axis (shape (n_max + 1, *x.shape))."""
    phi = [jnp.pi**-0.25 * jnp.exp(-0.5 * x**2)]
    if n_max >= 1:
        phi.append(math.sqrt(2.0) * x * phi[0])
    for n in range(1, n_max):
        phi.append(math.sqrt(2.0 / (n + 1)) * x * phi[n] - math.sqrt(n / (n + 1)) * phi[n - 1])
    return jnp.stack(phi)


def shapelet_basis(x, y, n_max: int, beta, center_x=0.0, center_y=0.0):
    """Every shapelet of the set of order ``n_max`` at (x, y), shape (K, *x.shape).

    Parameters
    ----------
    x, y : array
        Angular positions, arcsec (e.g. ray-traced source-plane positions).
    n_max : int
        Order of the set (static).
    beta : float
        Shapelet scale, arcsec.
    center_x, center_y : float
        Centre of the set, arcsec.
    """
    idx = shapelet_indices(n_max)
    phi_x = hermite_functions((x - center_x) / beta, n_max)
    phi_y = hermite_functions((y - center_y) / beta, n_max)
    return phi_x[idx[:, 0]] * phi_y[idx[:, 1]]


def shapelet_set(x, y, amp, beta, center_x=0.0, center_y=0.0):
    """Surface brightness Σ_k amp_k S_k(x, y) of a shapelet set (lenstronomy ``SHAPELETS``).

    ``amp`` (flux/arcsec²) holds one amplitude per shapelet, (n_max + 1)(n_max + 2)/2 of
    them in the order of :func:`shapelet_indices`; the order n_max follows from its
    length.
    """
    amp = jnp.asarray(amp)
    basis = shapelet_basis(x, y, shapelet_order(amp.shape[-1]), beta, center_x, center_y)
    return jnp.tensordot(amp, basis, axes=1)
