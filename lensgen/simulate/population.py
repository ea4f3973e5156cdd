"""Subhalo populations for simulations: masses, counts and positions, drawn in JAX.

The population (:class:`SubhaloPopulation`, :func:`sample_subhalos`):

* masses ``M200`` (M☉) from ``dN/dm ∝ m^-slope`` between ``m_min`` and ``m_max``
  (slope 1.9 by default), drawn by inverting the cumulative distribution;
* a fixed count or a Poisson count of mean ``n_mean``, padded to ``k_max``;
* positions uniform in area in the annulus ``ring_radius ± width`` around the main
  lens centre (``radial = "annulus"``) or with a Gaussian radius of mean
  ``ring_radius`` and standard deviation ``width`` (``"gaussian"``), uniform angle;
  ``ring_radius = 0`` means the main lens's Einstein radius;
* concentration and truncation under :class:`lensgen.lensing.halos.HaloConventions`,
  with optional log-normal concentration scatter ``c_scatter`` (dex).

Draws are padded arrays for :func:`lensgen.lensing.substructure.subhalos_deflection`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
from astropy.table import Table
from jax import Array

from lensgen.errors import ConfigError
from lensgen.lensing.halos import CONVENTION_FIELDS, HaloConventions, concentration, tnfw_params
from lensgen.lensing.units import DEFAULT_COSMOLOGY

TABLE_COLUMNS = ("mass", "x", "y", "Rs", "alpha_Rs", "r_trunc", "c", "injected")
"""Columns of the FITS ``SUBHALOS`` table (:func:`subhalo_table`)."""


class PopulationError(ConfigError):
    """An invalid :class:`SubhaloPopulation` (config loaders add the file and section)."""


@dataclass(frozen=True)
class SubhaloPopulation:
    """A subhalo population (the ``[substructure]`` section of a simulate config).

    Masses in M☉ (M200), lengths in arcsec; see the module docstring for the model.
    ``n_subhalos`` set: exactly that many; otherwise a Poisson count of mean ``n_mean``.
    ``n_max`` pads the random part (0: ``n_subhalos``, or ``n_mean + 6 sqrt(n_mean) + 3``
    for Poisson counts, beyond which counts are clipped). ``inject_mass``, ``inject_x``,
    ``inject_y`` add subhalos of given mass at given positions (on top of the random ones).
    ``z_lens``, ``z_source``, ``cosmology``, ``concentration`` and ``tau`` are the
    :class:`~lensgen.lensing.halos.HaloConventions` (:attr:`halos`).
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
            self.halos  # noqa: B018  (validates the conventions)
        except ConfigError as exc:
            raise PopulationError(str(exc)) from None
        for name in ("n_mean", "ring_radius", "c_scatter", "n_max"):
            if not getattr(self, name) >= 0:
                raise PopulationError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_subhalos is not None and self.n_subhalos < 0:
            raise PopulationError(f"n_subhalos must be >= 0, got {self.n_subhalos}")
        if self.n_subhalos is not None and 0 < self.n_max < self.n_subhalos:
            raise PopulationError(f"n_max={self.n_max} is below n_subhalos={self.n_subhalos}")
        if not self.width > 0:
            raise PopulationError(f"width must be > 0, got {self.width}")
        n_inj = {len(self.inject_mass), len(self.inject_x), len(self.inject_y)}
        if len(n_inj) != 1:
            raise PopulationError("inject_mass, inject_x and inject_y need the same length")
        if any(not m > 0 for m in self.inject_mass):
            raise PopulationError(f"inject_mass must be > 0 M☉, got {list(self.inject_mass)}")
        for name in ("inject_mass", "inject_x", "inject_y"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    @property
    def halos(self) -> HaloConventions:
        """The redshifts, cosmology, concentration and truncation of this population."""
        return HaloConventions(**{name: getattr(self, name) for name in CONVENTION_FIELDS})

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
    u01 = jax.random.uniform(key, shape)
    log_ratio = math.log(m_max / m_min)
    if abs(slope - 1.0) < 1e-12:
        return m_min * jnp.exp(u01 * log_ratio)
    a = 1.0 - slope
    r = math.expm1(a * log_ratio)
    return m_min * jnp.exp(jnp.log1p(u01 * r) / a)


def _radii(key: Array, population: SubhaloPopulation, ring: Array, n: int) -> Array:
    u01 = jax.random.uniform(key, (n,))
    w = population.width
    if population.radial == "gaussian":
        return jnp.abs(ring + w * jax.random.normal(jax.random.fold_in(key, 1), (n,)))
    r_in = jnp.maximum(ring - w, 0.0)
    r_out = ring + w
    return jnp.sqrt(r_in**2 + u01 * (r_out**2 - r_in**2))  # uniform per unit area


def sample_subhalos(
    key: Array,
    population: SubhaloPopulation,
    theta_E,
    center_x=0.0,
    center_y=0.0,
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
        entries are all zero (so they add nothing to the subhalo deflection).
    """
    pop = population
    halos = pop.halos
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
    c = concentration(mass, halos)
    if pop.c_scatter > 0:
        c = c * 10.0 ** (pop.c_scatter * jax.random.normal(k_c, c.shape) * ~injected)
    out = {"mass": mass, "c": c, **tnfw_params(mass, c, halos), "center_x": x, "center_y": y}
    out = {k: jnp.where(mask, v, 0.0) for k, v in out.items()}
    return {**out, "injected": injected, "mask": mask}


def subhalo_table(subhalos: dict[str, Any], population: SubhaloPopulation) -> Table:
    """An astropy Table of the real subhalos (mask true), for a FITS ``SUBHALOS`` extension.

    Columns ``mass`` (M☉), ``x``, ``y``, ``Rs``, ``alpha_Rs``, ``r_trunc`` (arcsec),
    ``c``, ``injected``; header cards record the halo conventions
    (:meth:`~lensgen.lensing.halos.HaloConventions.header_cards`; ``CONC`` = 0: Duffy et
    al. 2008), the concentration scatter and the count, so a fit rebuilds the same halos.
    """
    mask = np.asarray(subhalos["mask"], bool)
    src = {"x": "center_x", "y": "center_y"}
    cols = {name: np.asarray(subhalos[src.get(name, name)])[mask] for name in TABLE_COLUMNS}
    table = Table(cols)
    table["mass"].unit = u.Msun
    for name in ("x", "y", "Rs", "alpha_Rs", "r_trunc"):
        table[name].unit = u.arcsec
    table.meta.update(population.halos.header_cards())
    table.meta.update({"CSCATTER": population.c_scatter, "NSUB": int(mask.sum())})
    return table
