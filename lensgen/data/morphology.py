"""Galaxy morphology recipes for the offline GREAT3-format generator.

Two populations, chosen by name (:data:`MORPHOLOGIES`):

``"bulge_disk"``
    Smooth bulge + disk Sérsic galaxies only (the population of
    :func:`lensgen.data.synthetic.draw_galaxies` before the recipes below).
``"structured"`` (default)
    The same bulge + disk base population, with parametric structure mixed in.
    Fractions are per galaxy; "disks" are the regular (not irregular) galaxies
    with B/T < 0.5, 86 % of the regular ones:

    ==========================  =========================  ================================
    recipe                      fraction                   parameters
    ==========================  =========================  ================================
    irregular, clump-dominated  10 % of all galaxies       no bulge, 3–8 clumps carrying
                                                           30–60 % of the flux, spread
                                                           uniformly over 1.5 R_disk;
                                                           lopsided A1 0.2–0.5
    star-forming clumps         35 % of disks              1–8 Gaussian knots carrying
                                                           5–30 % of the flux
    spiral arms                 50 % of disks              m = 2 logarithmic spiral,
                                                           pitch 10–30°, amplitude 0.2–0.6
    bar                         40 % of disks              n = 0.5 Sérsic, axis ratio
                                                           0.2–0.4, major half-light
                                                           radius 0.4–0.8 R_disk,
                                                           5–20 % of the flux
    lopsided disk               30 % of disks              m = 1 modulation, A1 0.1–0.3
    companion                   5 % of all stamps          a Sérsic galaxy (n 0.8–2.5) of
                                                           0.3–0.7 R_disk and 10–50 % of
                                                           the main galaxy's flux
    ==========================  =========================  ================================

Sources of the numbers: the fraction of star-forming galaxies with off-centre UV
clumps is ~15–60 % at 0.5 < z < 3, depending on mass and redshift (Guo et al. 2015,
ApJ 800, 39); clumps hold of order 5–30 % of a clumpy galaxy's rest-UV light and
single clumps a few per cent (Guo et al. 2015; Elmegreen et al. 2007, ApJ 658, 763,
clump-cluster galaxies); spiral pitch angles mostly 10–30° (Kennicutt 1981, AJ 86,
1847; Davis et al. 2012, ApJS 199, 33); bar fraction of disks ~30–60 % at low z,
lower at z ≈ 1 (Sheth et al. 2008, ApJ 675, 1141), bar-to-total light ~0.1 and
flat bar profiles, n ≈ 0.5 (Gadotti 2009, MNRAS 393, 1531; Gadotti 2011, MNRAS 415,
3308); ~30 % of disks are lopsided with m = 1 amplitude A1 ≳ 0.2 (Zaritsky & Rix
1997, ApJ 477, 118; Bournaud et al. 2005, A&A 438, 507); peculiar/irregular
galaxies are ~10–30 % of the field at z ≲ 1 (Conselice et al. 2005, ApJ 620, 564).
A GREAT3-like COSMOS sample (I < 23.5) sits at z ≈ 0.5–1, so each fraction is taken
inside its range there. Close companions: a few per cent of galaxies have one
within a stamp (pair fractions of a few per cent at z < 1, e.g. Lotz et al. 2011,
ApJ 742, 103).

Geometry. Disk structure (arms, bar, lopsidedness, clumps) lives in the disk's
plane: it is drawn in the disk's product-average elliptical coordinates
u = M(e) (x − x_c) (the coordinates of
:func:`lensgen.lensing.light.sersic_ellipse`; det M = 1), so it is projected and
sheared with the disk. Angles in that frame and the companion's position angle
are measured from the x axis; a 90°-rotated pair partner has e → −e and every
such angle + π/2 (:func:`rotate_structure`). Each component is normalised to its
flux fraction on the rendered grid, and the whole galaxy to the drawn flux, so
the recipes move light around but never change the total.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lensgen.lensing.light import sersic, sersic_ellipse

MORPHOLOGIES = ("structured", "bulge_disk")
N_CLUMPS = 8  # clump slots per galaxy; unused slots carry zero weight

P_IRREGULAR = 0.10
P_CLUMPS = 0.35
P_ARMS = 0.50
P_BAR = 0.40
P_LOPSIDED = 0.30
P_COMPANION = 0.05

# Parameters whose values are angles in the disk or sky frame: + π/2 rotates a galaxy.
_ANGLES = ("arm_phase", "bar_phase", "lop_phase", "clump_theta", "comp_theta")


def _rayleigh_e(u):
    """|e| with σ_e = 0.2 per component, clipped at 0.7, from a uniform draw (as the base)."""
    return np.clip(0.2 * np.sqrt(-2.0 * np.log1p(-0.999 * u)), 0.0, 0.7)


def draw_structure(key, base: dict, pixel_scale: float) -> dict:
    """Structure parameters (module docstring) for galaxies with bulge + disk ``base``.

    Parameters
    ----------
    key : jax.random.PRNGKey
        Random key.
    base : dict
        Base parameters of :func:`lensgen.data.synthetic.draw_galaxies` (arrays of
        length m): ``r_disk`` (arcsec) and ``bt`` are used.
    pixel_scale : float
        Pixel scale, arcsec; floors the clump size at half a pixel and bounds the
        companion's offset to 5–12 pixels, inside the stamp border that the noise
        estimate reads.

    Returns
    -------
    dict
        ``bt`` (0 for irregulars, else unchanged) and the structure arrays: length
        m, or (m, :data:`N_CLUMPS`) for ``clump_*``. Radii and distances in arcsec,
        angles in radians, fractions of the galaxy's own flux (``comp_frac`` of the
        stamp's flux).
    """
    r_disk = np.asarray(base["r_disk"], np.float64)
    m = len(r_disk)
    # ~30 small draws: one NumPy generator seeded by the key's bits, not ~30 JAX dispatches.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def u(shape=(m,)):
        return rng.random(shape)

    def between(lo, hi, shape=(m,)):
        return lo + (hi - lo) * u(shape)

    irregular = u() < P_IRREGULAR
    disky = (np.asarray(base["bt"]) < 0.5) & ~irregular

    # Clumps follow the exponential disk light, whose enclosed-light radius is
    # h·Γ(2) (h = R_disk / 1.678); irregulars scatter them uniformly over the area.
    clumpy = irregular | (disky & (u() < P_CLUMPS))
    n_clumps = np.where(irregular, 3 + np.floor(6 * u()), 1 + np.floor(8 * u()))
    active = clumpy[:, None] & (np.arange(N_CLUMPS)[None, :] < n_clumps[:, None])
    weight = -np.log1p(-u((m, N_CLUMPS))) * active  # Dirichlet(1, …, 1) over active slots
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-300)
    rd = r_disk[:, None]
    rho_disk = rd / 1.678 * -np.log(u((m, N_CLUMPS)) * u((m, N_CLUMPS)) + 1e-300)
    rho_irr = 1.5 * rd * np.sqrt(u((m, N_CLUMPS)))
    rho = np.clip(np.where(irregular[:, None], rho_irr, rho_disk), 0.1 * rd, 2.0 * rd)
    clump_frac = np.where(irregular, between(0.3, 0.6), between(0.05, 0.30)) * clumpy

    spiral = disky & (u() < P_ARMS)
    pitch = np.deg2rad(between(10.0, 30.0)) * np.where(u() < 0.5, -1.0, 1.0)  # sign: handedness
    barred = disky & (u() < P_BAR)
    bar_q = between(0.2, 0.4)
    lopsided = irregular | (disky & (u() < P_LOPSIDED))
    lop_amp = np.where(irregular, between(0.2, 0.5), between(0.1, 0.3)) * lopsided

    companion = u() < P_COMPANION
    ratio = between(0.1, 0.5)  # companion / main flux
    comp_e, comp_phi = _rayleigh_e(u()), np.pi * u()
    return {
        "bt": np.where(irregular, 0.0, base["bt"]),
        "arm_amp": between(0.2, 0.6) * spiral,
        "arm_pitch": pitch,
        "arm_phase": np.pi * u(),
        "bar_frac": between(0.05, 0.20) * barred,
        # n = 0.5 bar with major-axis half-light radius a: product-average radius a·sqrt(q).
        "bar_r": between(0.4, 0.8) * r_disk * np.sqrt(bar_q),
        "bar_e": (1.0 - bar_q) / (1.0 + bar_q),
        "bar_phase": np.pi * u(),
        "lop_amp": lop_amp,
        "lop_phase": 2.0 * np.pi * u(),
        "clump_frac": clump_frac,
        "clump_w": weight,
        "clump_r": rho,
        "clump_theta": 2.0 * np.pi * u((m, N_CLUMPS)),
        "clump_sigma": np.maximum(rd * between(0.05, 0.15, (m, N_CLUMPS)), 0.5 * pixel_scale),
        "comp_frac": companion * ratio / (1.0 + ratio),
        "comp_r": np.maximum(r_disk * between(0.3, 0.7), 0.04),
        "comp_n": between(0.8, 2.5),
        "comp_e1": comp_e * np.cos(2.0 * comp_phi),
        "comp_e2": comp_e * np.sin(2.0 * comp_phi),
        "comp_dist": np.clip(r_disk * between(2.0, 4.0), 5.0 * pixel_scale, 12.0 * pixel_scale),
        "comp_theta": 2.0 * np.pi * u(),
    }


def rotate_structure(params: dict, odd: np.ndarray) -> dict:
    """Rotate the structure of galaxies ``odd`` (bool mask) by 90° (module docstring).

    The disk's own e → −e is done by the caller; here every frame angle gets + π/2
    and the companion's ellipticity flips sign.
    """
    out = dict(params)
    for name in _ANGLES:
        if name in out:
            shift = np.pi / 2 * (odd[:, None] if np.ndim(out[name]) == 2 else odd)
            out[name] = out[name] + shift
    for name in ("comp_e1", "comp_e2"):
        if name in out:
            out[name] = np.where(odd, -out[name], out[name])
    return out


def _unit(img):
    """``img`` scaled to unit sum on the grid (zero stays zero)."""
    total = jnp.sum(img)
    return img / jnp.where(total > 0, total, 1.0)


def structured_galaxy(p: dict, xs, ys):
    """One galaxy with structure on the grid ``xs, ys`` (arcsec), flux per grid cell.

    Disk: exponential (n = 1) profile times 1 + A_arm w(R) cos 2(θ − φ_arm −
    ln(R/R_disk)/tan ψ) + A1 tanh(R/R_disk) cos(θ − φ_1), in disk-plane coordinates
    (R, θ); w(R) = 1 − exp(−(2R/R_disk)²) keeps the arms out of the centre. Bulge:
    Sérsic with half the disk's ellipticity, as the base population. Bar: n = 0.5
    Sérsic in the disk plane. Clumps: Gaussians in the disk plane. Companion: a
    Sérsic on the sky. Component flux fractions as :func:`draw_structure`; the
    sum over the grid equals ``p["flux"]`` exactly.
    """
    dx, dy = xs - p["center_x"], ys - p["center_y"]
    e1, e2 = p["e1"], p["e2"]
    norm = jnp.sqrt(jnp.maximum(jnp.abs(1.0 - e1**2 - e2**2), 1e-6))
    ux, uy = ((1.0 - e1) * dx - e2 * dy) / norm, (-e2 * dx + (1.0 + e1) * dy) / norm
    rd = p["r_disk"]
    radius = jnp.sqrt(jnp.maximum(ux**2 + uy**2, 1e-12))
    theta = jnp.arctan2(uy, ux)
    winding = jnp.log(radius / rd) / jnp.tan(p["arm_pitch"])
    arms = p["arm_amp"] * (1.0 - jnp.exp(-((2.0 * radius / rd) ** 2)))
    arms = arms * jnp.cos(2.0 * (theta - p["arm_phase"] - winding))
    lopsided = p["lop_amp"] * jnp.tanh(radius / rd) * jnp.cos(theta - p["lop_phase"])
    disk = sersic(ux, uy, 1.0, rd, 1.0) * jnp.maximum(1.0 + arms + lopsided, 0.0)
    bulge = sersic_ellipse(dx, dy, 1.0, p["r_bulge"], p["n_bulge"], 0.5 * e1, 0.5 * e2)
    bar_e1 = p["bar_e"] * jnp.cos(2.0 * p["bar_phase"])
    bar_e2 = p["bar_e"] * jnp.sin(2.0 * p["bar_phase"])
    bar = sersic_ellipse(ux, uy, 1.0, p["bar_r"], 0.5, bar_e1, bar_e2)
    cx = p["clump_r"] * jnp.cos(p["clump_theta"])
    cy = p["clump_r"] * jnp.sin(p["clump_theta"])
    d2 = (ux[..., None] - cx) ** 2 + (uy[..., None] - cy) ** 2
    knots = jnp.exp(-0.5 * d2 / p["clump_sigma"] ** 2)
    knots = knots / jnp.maximum(jnp.sum(knots, axis=(0, 1)), 1e-30)
    clumps = jnp.sum(knots * p["clump_w"], axis=-1)
    smooth = 1.0 - p["bar_frac"] - p["clump_frac"]
    body = p["bt"] * _unit(bulge) + (1.0 - p["bt"]) * (
        smooth * _unit(disk) + p["bar_frac"] * _unit(bar) + p["clump_frac"] * clumps
    )
    comp = sersic_ellipse(
        dx,
        dy,
        1.0,
        p["comp_r"],
        p["comp_n"],
        p["comp_e1"],
        p["comp_e2"],
        p["comp_dist"] * jnp.cos(p["comp_theta"]),
        p["comp_dist"] * jnp.sin(p["comp_theta"]),
    )
    img = (1.0 - p["comp_frac"]) * body + p["comp_frac"] * _unit(comp)
    return p["flux"] * _unit(img)
