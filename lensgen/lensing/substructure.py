"""Dark-matter subhalos: a vectorised sum of truncated NFW halos and a population sampler.

A population of ``K`` subhalos is one lens component, ``"SUBHALOS"``, whose parameters
are ``(K,)`` arrays with the names of lenstronomy's "TNFW" (``Rs``, ``alpha_Rs``,
``r_trunc``, ``center_x``, ``center_y``; arcsec). The deflection is a ``jax.vmap`` of
:func:`lensgen.lensing.nfw.tnfw_deflection` over the subhalos, summed. Entries with
``alpha_Rs = 0`` contribute exactly zero whatever their other values, so a Poisson
number of subhalos is padded to a fixed ``K`` and one compiled function serves every
count.

The population (:class:`SubhaloPopulation`, :func:`sample_subhalos`):

* masses ``M200`` (M☉) from ``dN/dm ∝ m^-slope`` between ``m_min`` and ``m_max``
  (slope 1.9 by default), drawn by inverting the cumulative distribution;
* a fixed count or a Poisson count of mean ``n_mean``, padded to ``k_max``;
* positions uniform in area in the annulus ``ring_radius ± width`` around the main
  lens centre (``radial = "annulus"``) or with a Gaussian radius of mean
  ``ring_radius`` and standard deviation ``width`` (``"gaussian"``), uniform angle;
  ``ring_radius = 0`` means the main lens's Einstein radius;
* concentration from Duffy et al. (2008, MNRAS 390, L64, Table 1, NFW, M200, full
  sample, 0 < z < 2): ``c = 5.71 (M / 2e12 h^-1 M☉)^-0.084 (1 + z)^-0.47``, extrapolated
  below its calibrated range (1e11-1e15 M☉), with optional log-normal scatter
  ``c_scatter`` (dex); or a fixed ``concentration``;
* truncation ``r_trunc = tau * Rs``;
* ``Rs`` and ``alpha_Rs`` from ``M200`` and ``c`` by :mod:`lensgen.lensing.units`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from lensgen.errors import ConfigError, LensgenError
from lensgen.lensing.nfw import tnfw_convergence, tnfw_deflection
from lensgen.lensing.units import (
    DEFAULT_COSMOLOGY,
    check_redshifts,
    get_cosmology,
    lensing_units,
    nfw_angles,
)

SUBHALOS = "SUBHALOS"
"""Lens model name of the vectorised subhalo component."""
SUBHALO_PARAMS = ("Rs", "alpha_Rs", "r_trunc", "center_x", "center_y")
TABLE_COLUMNS = ("mass", "x", "y", "Rs", "alpha_Rs", "r_trunc", "c", "injected")


def _active(Rs: ArrayLike, alpha_Rs: ArrayLike, r_trunc: ArrayLike):
    """Mask of real subhalos and radii made safe (1) for padding entries."""
    alpha_Rs = jnp.asarray(alpha_Rs)
    active = alpha_Rs != 0
    return active, jnp.where(active, Rs, 1.0), jnp.where(active, r_trunc, 1.0)


def subhalos_deflection(x, y, Rs, alpha_Rs, r_trunc, center_x, center_y) -> tuple[Array, Array]:
    """Summed TNFW deflection of ``K`` subhalos (arcsec).

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec), any shape.
    Rs, alpha_Rs, r_trunc, center_x, center_y : array_like, shape (K,)
        TNFW parameters of each subhalo (arcsec), as :func:`~lensgen.lensing.nfw.tnfw_deflection`.
        ``alpha_Rs = 0`` marks padding: it adds exactly 0 (value and gradient finite).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection summed over subhalos, shape of ``x, y``.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _, rs, rt = _active(Rs, alpha_Rs, r_trunc)
    ax, ay = jax.vmap(tnfw_deflection, in_axes=(None, None, 0, 0, 0, 0, 0))(
        x, y, rs, alpha_Rs, rt, center_x, center_y
    )
    return ax.sum(axis=0), ay.sum(axis=0)


def subhalos_convergence(x, y, Rs, alpha_Rs, r_trunc, center_x, center_y) -> Array:
    """Summed TNFW convergence of ``K`` subhalos; parameters as :func:`subhalos_deflection`."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    _, rs, rt = _active(Rs, alpha_Rs, r_trunc)
    kappa = jax.vmap(tnfw_convergence, in_axes=(None, None, 0, 0, 0, 0, 0))(
        x, y, rs, alpha_Rs, rt, center_x, center_y
    )
    return kappa.sum(axis=0)


class PopulationError(ConfigError):
    """An invalid :class:`SubhaloPopulation` (a ConfigError: config loaders add the file and section)."""


@dataclass(frozen=True)
class SubhaloPopulation:
    """A subhalo population (the ``[substructure]`` section of a simulate config).

    Masses in M☉ (M200), lengths in arcsec; see the module docstring for the model.
    ``n_subhalos`` set: exactly that many; otherwise a Poisson count of mean ``n_mean``.
    ``n_max`` pads the random part (0: ``n_subhalos``, or ``n_mean + 6 sqrt(n_mean) + 3``
    for Poisson counts, beyond which counts are clipped). ``inject_mass``, ``inject_x``,
    ``inject_y`` add subhalos of given mass at given positions (on top of the random ones).
    """

    m_min: float = 1e7
    m_max: float = 1e10
    slope: float = 1.9
    n_mean: float = 10.0
    n_subhalos: int | None = None
    n_max: int = 0
    radial: Literal["annulus", "gaussian"] = "annulus"
    ring_radius: float = 0.0
    width: float = 0.3
    z_lens: float = 0.5
    z_source: float = 2.0
    cosmology: str = DEFAULT_COSMOLOGY
    concentration: float = 0.0
    c_scatter: float = 0.0
    tau: float = 5.0
    inject_mass: tuple[float, ...] = ()
    inject_x: tuple[float, ...] = ()
    inject_y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (0 < self.m_min < self.m_max):
            raise PopulationError(
                f"mass bounds reversed or non-positive: m_min={self.m_min:g}, "
                f"m_max={self.m_max:g} (need 0 < m_min < m_max, M☉)"
            )
        try:
            check_redshifts(self.z_lens, self.z_source)
            get_cosmology(self.cosmology)
        except LensgenError as exc:
            raise PopulationError(str(exc)) from None
        for name in ("n_mean", "ring_radius", "concentration", "c_scatter", "n_max"):
            if not getattr(self, name) >= 0:
                raise PopulationError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_subhalos is not None and self.n_subhalos < 0:
            raise PopulationError(f"n_subhalos must be >= 0, got {self.n_subhalos}")
        if self.n_subhalos is not None and 0 < self.n_max < self.n_subhalos:
            raise PopulationError(f"n_max={self.n_max} is below n_subhalos={self.n_subhalos}")
        if not (self.width > 0 and self.tau > 0):
            raise PopulationError(f"width and tau must be > 0, got {self.width}, {self.tau}")
        n_inj = {len(self.inject_mass), len(self.inject_x), len(self.inject_y)}
        if len(n_inj) != 1:
            raise PopulationError("inject_mass, inject_x and inject_y need the same length")
        if any(not m > 0 for m in self.inject_mass):
            raise PopulationError(f"inject_mass must be > 0 M☉, got {list(self.inject_mass)}")
        for name in ("inject_mass", "inject_x", "inject_y"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    @property
    def n_random(self) -> int:
        """Padded size of the randomly drawn part."""
        if self.n_max:
            return self.n_max
        if self.n_subhalos is not None:
            return self.n_subhalos
        return math.ceil(self.n_mean + 6.0 * math.sqrt(self.n_mean)) + 3

    @property
    def k_max(self) -> int:
        """Length ``K`` of the subhalo arrays: random part plus injected subhalos."""
        return self.n_random + len(self.inject_mass)


def sample_masses(key: Array, shape: tuple[int, ...], m_min: float, m_max: float, slope: float):
    """Masses (M☉) from ``dN/dm ∝ m^-slope`` on ``[m_min, m_max]`` by inverse CDF.

    ``m = m_min [1 + u (r - 1)]^(1/(1-slope))`` with ``r = (m_max/m_min)^(1-slope)``
    (log-uniform for ``slope = 1``), written relative to ``m_min`` for float32.
    """
    u = jax.random.uniform(key, shape)
    log_ratio = math.log(m_max / m_min)
    if abs(slope - 1.0) < 1e-12:
        return m_min * jnp.exp(u * log_ratio)
    a = 1.0 - slope
    r = math.expm1(a * log_ratio)
    return m_min * jnp.exp(jnp.log1p(u * r) / a)


def concentration(m200: ArrayLike, population: SubhaloPopulation) -> Array:
    """Median concentration ``c(M200, z_lens)``: Duffy et al. (2008) or the fixed value."""
    if population.concentration > 0:
        return jnp.full_like(jnp.asarray(m200, dtype=float), population.concentration)
    h = get_cosmology(population.cosmology).h
    pivot = 2e12 / h
    return 5.71 * (jnp.asarray(m200) / pivot) ** -0.084 * (1.0 + population.z_lens) ** -0.47


def tnfw_from_mass(
    m200: ArrayLike, center_x: ArrayLike, center_y: ArrayLike, population: SubhaloPopulation
) -> dict[str, Array]:
    """TNFW lens parameters of subhalos of mass ``m200`` (M☉) at ``(center_x, center_y)``.

    Uses the median ``c(M)`` (no scatter) and ``r_trunc = tau * Rs``. Pure JAX, so a
    NumPyro model can sample mass and position and render ``{"type": "TNFW", **this}``.
    """
    units = lensing_units(population.z_lens, population.z_source, population.cosmology)
    rs, alpha = nfw_angles(m200, concentration(m200, population), units)
    return {
        "Rs": rs,
        "alpha_Rs": alpha,
        "r_trunc": population.tau * rs,
        "center_x": jnp.asarray(center_x, rs.dtype),
        "center_y": jnp.asarray(center_y, rs.dtype),
    }


def _radii(key: Array, population: SubhaloPopulation, ring: Array, n: int) -> Array:
    u = jax.random.uniform(key, (n,))
    w = population.width
    if population.radial == "gaussian":
        return jnp.abs(ring + w * jax.random.normal(jax.random.fold_in(key, 1), (n,)))
    r_in = jnp.maximum(ring - w, 0.0)
    r_out = ring + w
    return jnp.sqrt(r_in**2 + u * (r_out**2 - r_in**2))  # uniform per unit area


def sample_subhalos(
    key: Array,
    population: SubhaloPopulation,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> dict[str, Array]:
    """Draw one realisation of the population, padded to ``population.k_max`` entries.

    Parameters
    ----------
    key : jax.Array
        PRNG key.
    population : SubhaloPopulation
        The population (static).
    theta_E : array_like
        Einstein radius of the main lens (arcsec); the ring radius unless
        ``population.ring_radius > 0``.
    center_x, center_y : array_like
        Centre of the main lens (arcsec); random positions are around it.

    Returns
    -------
    dict of (K,) arrays
        ``mass`` (M☉), ``c``, ``Rs``, ``alpha_Rs``, ``r_trunc``, ``center_x``,
        ``center_y`` (arcsec), ``injected`` and ``mask`` (bool, real subhalos). Padding
        entries are all zero (so they add nothing to :func:`subhalos_deflection`).
    """
    pop = population
    n = pop.n_random
    k_n, k_m, k_r, k_phi, k_c = jax.random.split(key, 5)
    if pop.n_subhalos is not None:
        count = jnp.asarray(pop.n_subhalos)
    else:
        count = jnp.minimum(jax.random.poisson(k_n, pop.n_mean), n)
    live = jnp.arange(n) < count
    ring = jnp.asarray(pop.ring_radius if pop.ring_radius > 0 else theta_E)
    r = _radii(k_r, pop, ring, n)
    phi = jax.random.uniform(k_phi, (n,), maxval=2.0 * jnp.pi)
    mass = jnp.concatenate(
        [
            sample_masses(k_m, (n,), pop.m_min, pop.m_max, pop.slope),
            jnp.asarray(pop.inject_mass, r.dtype),
        ]
    )
    x = jnp.concatenate([center_x + r * jnp.cos(phi), jnp.asarray(pop.inject_x, r.dtype)])
    y = jnp.concatenate([center_y + r * jnp.sin(phi), jnp.asarray(pop.inject_y, r.dtype)])
    n_inj = len(pop.inject_mass)
    mask = jnp.concatenate([live, jnp.ones(n_inj, bool)])
    injected = jnp.concatenate([jnp.zeros(n, bool), jnp.ones(n_inj, bool)])
    c = concentration(mass, pop)
    if pop.c_scatter > 0:
        c = c * 10.0 ** (pop.c_scatter * jax.random.normal(k_c, c.shape) * ~injected)
    units = lensing_units(pop.z_lens, pop.z_source, pop.cosmology)
    rs, alpha = nfw_angles(mass, c, units)
    out = {
        "mass": mass,
        "c": c,
        "Rs": rs,
        "alpha_Rs": alpha,
        "r_trunc": pop.tau * rs,
        "center_x": x,
        "center_y": y,
    }
    out = {k: jnp.where(mask, v, 0.0) for k, v in out.items()}
    return {**out, "injected": injected, "mask": mask}


def check_subhalos(params: dict[str, Any], where: str = "SUBHALOS") -> None:
    """Raise :class:`LensgenError` for non-finite values, ``alpha_Rs < 0``, or a real
    subhalo (``alpha_Rs > 0``) with ``Rs`` or ``r_trunc`` not > 0 (concrete arrays)."""
    import numpy as np

    vals = {k: np.asarray(params[k], dtype=float) for k in SUBHALO_PARAMS}
    for k, v in vals.items():
        if not np.all(np.isfinite(v)):
            raise LensgenError(f"{where}: {k} must be finite")
    if np.any(vals["alpha_Rs"] < 0):
        raise LensgenError(f"{where}: alpha_Rs must be >= 0 (0 marks padding)")
    live = vals["alpha_Rs"] > 0
    for k in ("Rs", "r_trunc"):
        if np.any(live & ~(vals[k] > 0)):
            raise LensgenError(f"{where}: {k} must be > 0 for every subhalo with alpha_Rs > 0")


def subhalo_table(subhalos: dict[str, Any], population: SubhaloPopulation):
    """An astropy Table of the real subhalos (mask true), for a FITS ``SUBHALOS`` extension.

    Columns ``mass`` (M☉), ``x``, ``y``, ``Rs``, ``alpha_Rs``, ``r_trunc`` (arcsec),
    ``c``, ``injected``; header cards record the redshifts, cosmology, ``tau`` and the
    concentration settings (``CONC`` = 0: Duffy et al. 2008), so
    :func:`tnfw_from_mass` can be rebuilt from the file.
    """
    import astropy.units as u
    import numpy as np
    from astropy.table import Table

    mask = np.asarray(subhalos["mask"], bool)
    src = {"x": "center_x", "y": "center_y"}
    cols = {name: np.asarray(subhalos[src.get(name, name)])[mask] for name in TABLE_COLUMNS}
    table = Table(cols)
    table["mass"].unit = u.Msun
    for name in ("x", "y", "Rs", "alpha_Rs", "r_trunc"):
        table[name].unit = u.arcsec
    table.meta.update(
        {
            "Z_LENS": population.z_lens,
            "Z_SOURCE": population.z_source,
            "COSMO": population.cosmology,
            "TAU": population.tau,
            "CONC": population.concentration,
            "CSCATTER": population.c_scatter,
            "NSUB": int(mask.sum()),
        }
    )
    return table
