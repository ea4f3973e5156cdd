"""Starting points of the MAP fit, read off the data.

Lensing posteriors are multimodal in the source's orientation and shape, and
gradient steps from blind prior draws mostly stall in side modes. The starts are
therefore built from the image itself:

1. The Einstein radius and lens centre from the detected pixels
   (:func:`estimate_geometry`): the lensed arcs lie near the Einstein ring.
2. For each start's lens guess, the detected pixels are ray-traced back through a
   singular isothermal sphere to the source plane, where their surface brightness
   weighted by |det A| (the inverse magnification) gives the source's flux, light
   centroid, RMS radius and ellipticity (:func:`source_moments`).
3. For the learned source, the latent vectors of the starts are the prior draws
   whose decoded galaxies match that ellipticity best (:func:`matching_latents`):
   the latent carries the galaxy's orientation, which no gradient path turns
   smoothly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to

from lensgen.infer.model import likelihood_sigma
from lensgen.infer.problem import Problem
from lensgen.lensing.grid import pixel_centres
from lensgen.source.model import light_moments, stamp_coordinates

CANDIDATES = 256
"""Prior draws of the latent among which the starts' latents are chosen."""


class SourceMoments(NamedTuple):
    """Source-plane light moments: flux (counts/s), centroid and RMS radius (arcsec),
    ellipticity e1, e2 from the second moments ((Qxx − Qyy), 2 Qxy over Qxx + Qyy)."""

    flux: float
    center_x: float
    center_y: float
    size: float
    e1: float
    e2: float


def _detected(problem: Problem, threshold: float = 3.0):
    """Positions (arcsec) and values of the pixels above ``threshold`` σ."""
    data = problem.data
    image, mask = np.asarray(data.image), np.asarray(data.mask)
    sigma = np.asarray(likelihood_sigma(data, data.image))  # data as the model for Poisson σ
    detected = mask & (image > threshold * sigma)
    scene = problem.scene
    x, y = pixel_centres(scene.shape, scene.pixel_scale, scene.orientation)
    return x[detected], y[detected], image[detected]


def estimate_geometry(problem: Problem) -> tuple[float, float, float] | None:
    """Einstein radius and lens centre (arcsec) read off the detected pixels.

    Pixels at S/N > 3 trace the lensed arcs, which lie near the Einstein ring: their
    mean position estimates the lens centre and their mean distance from it θ_E.
    Unweighted means, because the brightest arc of an off-centre source would pull
    a flux-weighted centroid towards it. ``None`` when nothing is detected.
    """
    x, y, _ = _detected(problem)
    if x.size < 3:
        return None
    cx, cy = float(x.mean()), float(y.mean())
    return float(np.hypot(x - cx, y - cy).mean()), cx, cy


def source_moments(problem: Problem, theta_E: float, cx: float, cy: float) -> SourceMoments | None:
    """Source-plane moments of the detected light under an SIS guess (see the module doc).

    Every source point of an SIS inside its caustic has two images, so the summed
    flux is halved. The PSF and the detection threshold bias the size; these are
    starting values for the optimiser, not estimates.
    """
    x, y, value = _detected(problem)
    if x.size < 3:
        return None
    dx, dy = x - cx, y - cy
    r = np.maximum(np.hypot(dx, dy), 1e-9)
    bx, by = x - theta_E * dx / r, y - theta_E * dy / r
    w = value * np.abs(1.0 - theta_E / r)
    total = w.sum()
    if not total > 0:
        return None
    mx, my = (w * bx).sum() / total, (w * by).sum() / total
    qxx = (w * (bx - mx) ** 2).sum() / total
    qyy = (w * (by - my) ** 2).sum() / total
    qxy = (w * (bx - mx) * (by - my)).sum() / total
    trace = max(qxx + qyy, 1e-12)
    size = max(float(np.sqrt(trace)), 0.5 * problem.scene.pixel_scale)
    return SourceMoments(0.5 * total, mx, my, size, (qxx - qyy) / trace, 2 * qxy / trace)


def _decoded_ellipticity(problem: Problem, latent: jnp.ndarray) -> np.ndarray:
    """(e1, e2) of decoded galaxies for latent-site values (u for a flow, else z)."""
    model = problem.source_model
    to_z = model.from_normal if problem.spec.latent == "flow" else (lambda v: v)

    def one(v):
        d = model.decode(to_z(v))
        total, u_bar, v_bar, _ = light_moments(d)
        uu, vv = stamp_coordinates(d)
        uu, vv = uu - u_bar, vv - v_bar
        quu, qvv, quv = (jnp.sum(d * a) / total for a in (uu * uu, vv * vv, uu * vv))
        return jnp.stack([(quu - qvv) / (quu + qvv), 2 * quv / (quu + qvv)])

    return np.asarray(jax.jit(jax.vmap(one))(latent))


def matching_latents(problem: Problem, rng: np.random.Generator, targets: np.ndarray) -> np.ndarray:
    """Latent-site values whose decoded ellipticity is closest to each target (e1, e2).

    Candidates are prior draws (u ~ N(0, I) for a flow, else z ~ N(0, I)); each target
    takes the best candidate not yet taken, so the starts stay distinct. The decoder's
    u axis runs along sky x when ``phi_G`` = 0, so the ellipticities compare directly.
    """
    d = problem.source_model.latent_dim
    pool = rng.standard_normal((CANDIDATES, d))
    ell = _decoded_ellipticity(problem, jnp.asarray(pool, jnp.float32))
    out, taken = [], np.zeros(CANDIDATES, bool)
    for target in targets:
        dist = np.where(taken, np.inf, np.sum((ell - target) ** 2, axis=1))
        best = int(np.argmin(dist))
        taken[best] = True
        out.append(pool[best])
    return np.asarray(out)


def _prior_centre(problem: Problem, axis: str, default: float) -> float:
    """Location of the lens-centre prior along ``axis`` (``default`` if it has none)."""
    prior = problem.priors.get(f"lens.0.center_{axis}")
    if prior is None or prior.dist not in ("Normal", "TruncatedNormal", "Fixed"):
        return default
    return prior.args[0]


def map_starts(key, problem: Problem, z: dict, n: int) -> dict:
    """Unconstrained start points: prior draws ``z`` (batch of ``n``) with data-driven
    lens geometry and source placement, and for the learned source matching latents."""
    geometry = estimate_geometry(problem)
    rng = np.random.default_rng(np.asarray(key).tolist())
    values: dict[str, np.ndarray] = {}
    latent_site = "source.u" if problem.spec.latent == "flow" else "source.z"
    if geometry is not None:
        theta, cx, cy = geometry
        spread = np.linspace(0.85, 1.15, n) if n > 1 else np.ones(1)
        # Half the starts put the lens at the detected pixels' centre, half at the
        # prior's centre: the arcs of an off-centre source pull the former aside.
        centre_x = np.where(np.arange(n) % 2 == 0, cx, _prior_centre(problem, "x", cx))
        centre_y = np.where(np.arange(n) % 2 == 0, cy, _prior_centre(problem, "y", cy))
        values = {
            "lens.0.theta_E": theta * spread,
            "lens.0.center_x": centre_x,
            "lens.0.center_y": centre_y,
        }
        moments = [
            source_moments(problem, t, x, y)
            for t, x, y in zip(theta * spread, centre_x, centre_y, strict=True)
        ]
        if all(m is not None for m in moments):
            for name in ("flux", "center_x", "center_y", "size"):
                values[f"source.0.{name}"] = np.array([getattr(m, name) for m in moments])
            # A shapelet set of scale β reaches ~β√(n_max + 1): β = RMS radius covers
            # the source and its near surroundings.
            values["source.0.beta"] = values["source.0.size"]
            # A grid of half-width 3 RMS radii holds the source and a close companion.
            values["source.0.width"] = 3.0 * values["source.0.size"]
            if problem.spec.learned and latent_site in z:
                targets = np.array([[m.e1, m.e2] for m in moments])
                values[latent_site] = matching_latents(problem, rng, targets)
    if "source.0.phi_G" in z:
        values["source.0.phi_G"] = np.pi * (2 * np.arange(n) / n - 1) + rng.uniform(
            0, 2 * np.pi / n
        )
    out = dict(z)
    for site, value in values.items():
        if site not in z:
            continue
        if site == latent_site:  # N(0, I): unconstrained already
            out[site] = jnp.asarray(value, z[site].dtype).reshape(z[site].shape)
            continue
        prior = problem.priors.get(site)
        if prior is None or prior.fixed:
            continue
        low, high = prior.support()
        pad = 1e-3 * (high - low) if np.isfinite(high - low) else 0.0
        value = np.clip(value, low + pad, high - pad)
        transform = biject_to(prior.to_numpyro().support).inv
        out[site] = transform(jnp.asarray(value, z[site].dtype)).reshape(z[site].shape)
    return out
