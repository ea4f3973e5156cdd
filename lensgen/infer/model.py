"""The NumPyro model: lens mass + source (learned or Sérsic) + lens light → image.

One call renders the whole scene with one jitted renderer
(:func:`lensgen.lensing.render.make_renderer`), so the likelihood costs a single
ray-shoot + decode + PSF convolution per evaluation.

Source options
--------------
``"vae"``
    The decoder of a :class:`~lensgen.source.model.SourceModel` as an INTERPOL
    source. With a flow the sampler works in u-space: u ~ N(0, I) and
    z = ``from_normal(u)`` (one pass of the inverse autoregressive flow); as the flow
    is a bijection this *is* the flow prior on z, and the geometry NUTS sees is the
    (nearly Gaussian) one of u. Without a flow (or ``latent_prior="normal"``)
    z ~ N(0, I). The decoded galaxy is placed by its light, not by its pixel grid
    (:func:`lensgen.source.model.interpol_params`): ``flux`` is the flux of its
    bright core (counts/s), ``center_x``/``center_y`` its core centroid and ``size``
    its core radius (arcsec) (:func:`lensgen.source.model.core_moments`), so the latent
    directions that shift, grow or brighten the decoded galaxy, or change its faint
    wings, leave the image's bright core unchanged and only the prior holds them: the
    posterior has no ridge between the latent and these parameters. ``phi_G`` is fixed at 0
    by default because the latent carries orientation (the training set holds every
    orientation, and augmentation adds flips and 90° turns); a prior frees it. This
    is the convention of ``lensgen simulate`` (``[[source]] type = "VAE"``).
``"SERSIC_ELLIPSE"``
    lenstronomy's elliptical Sérsic.
``"pixels"``
    A free-form source: an n × n grid of surface-brightness nodes
    (:mod:`lensgen.lensing.pixelgrid`, n = ``ModelSpec.source_grid``) of half-width
    ``width`` centred on ``center_x``/``center_y``, interpolated bilinearly, whose
    amplitudes are marginalised analytically (:mod:`lensgen.infer.linear`) under the
    gradient regularisation of Suyu et al. (2006) with strength ``reg``, which is
    inferred. The sampler sees only the centre, the width and ``reg``.
``"vae+pixels"``
    The learned source plus a marginalised pixel-grid residual centred on its core
    centroid: the decoder's galaxy is the prior mean of the source and the grid
    carries what the decoder cannot represent (clumps, arms, companions).
``"shapelets"``, ``"vae+shapelets"``
    As the two above with a shapelet set of order ``ModelSpec.shapelet_order``
    (:mod:`lensgen.lensing.shapelets`) of scale ``beta`` in place of the grid, with
    independent Gaussian amplitudes (R = I).

Likelihood
----------
``"gaussian"``: independent Normal(model, σ) with σ the observation's noise map.
With a marginalised source the likelihood is the marginal likelihood of the amplitudes
(:mod:`lensgen.infer.linear`), normalised like the Normal's so that the evidences
of different sources compare; for ``"poisson"`` its σ² uses the data in place of
the model (the marginalisation needs σ fixed).
``"poisson"``: photon counts n = image·exptime are Poisson(model·exptime) plus a
Gaussian read/background term. We use the Gaussian approximation with the
model-dependent variance σ² = background_rms² + max(model, 0)/exptime (lenstronomy's
convention, and exact in the limit of > ~10 counts per pixel that lensing data
live in); a true Poisson on counts would ignore the background term and be
non-differentiable in the data's continuous, background-subtracted values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from lensgen.errors import LensgenError
from lensgen.infer.linear import LinearFit, marginalise, precision
from lensgen.infer.priors import Prior
from lensgen.lensing.halos import HaloConventions, tnfw_from_mass
from lensgen.lensing.light import LIGHT_PROFILES
from lensgen.lensing.mass import MASS_PROFILES
from lensgen.lensing.pixelgrid import grid_interpol
from lensgen.source.model import SOURCE_PARAMS, interpol_params

VAE_PARAMS = SOURCE_PARAMS
"""Parameters of the learned source besides the latent vector."""
LINEAR_PARAMS = {"shapelets": ("beta", "reg"), "pixels": ("width", "reg")}
"""Parameters of a marginalised source besides its centre: the scale (arcsec: shapelet
β, or the grid's half-width) and the regularisation strength (:mod:`lensgen.infer.linear`)."""
SOURCES = ("vae", "SERSIC_ELLIPSE", "shapelets", "vae+shapelets", "pixels", "vae+pixels")
"""Source models of the inference model (module docstring)."""


def is_learned(source: str) -> bool:
    """Whether source model ``source`` has the decoder in it (``vae``, ``vae+…``)."""
    return source == "vae" or source.startswith("vae+")


SUBHALO_SITES = ("log10_m", "center_x", "center_y")
"""Free parameters of each fitted subhalo: log10 of M200 (M☉) and position (arcsec)."""


@dataclass(frozen=True)
class ModelSpec:
    """Static description of the model (hashable, so renderers are built once).

    ``subhalos`` > 0 adds that many truncated-NFW subhalos, sampled as
    ``subhalo.<k>.log10_m`` / ``center_x`` / ``center_y`` and converted to lenstronomy
    "TNFW" parameters with :func:`lensgen.lensing.halos.tnfw_from_mass` under
    ``halos`` (redshifts, cosmology, concentration, truncation); they are appended
    to the lens list after ``lens``, so the renderer's scene needs ``("TNFW",) * subhalos``
    there.
    """

    lens: tuple[str, ...] = ("SIS",)
    source: Literal[
        "vae", "SERSIC_ELLIPSE", "shapelets", "vae+shapelets", "pixels", "vae+pixels"
    ] = "vae"
    lens_light: tuple[str, ...] = ()
    latent: Literal["flow", "normal"] = "normal"
    likelihood: Literal["gaussian", "poisson"] = "gaussian"
    subhalos: int = 0
    halos: HaloConventions | None = None
    shapelet_order: int = 12
    source_grid: int = 16

    @property
    def learned(self) -> bool:
        """Whether the source has the decoder in it (``vae``, ``vae+shapelets``, ``vae+pixels``)."""
        return is_learned(self.source)

    @property
    def basis(self) -> str | None:
        """The marginalised part's basis, ``"shapelets"`` or ``"pixels"`` (None: none)."""
        base = self.source.removeprefix("vae+")
        return base if base in LINEAR_PARAMS else None

    @property
    def linear(self) -> bool:
        """Whether the source has marginalised amplitudes."""
        return self.basis is not None

    @property
    def basis_size(self) -> int:
        """n of the basis: the shapelet order or the grid's side."""
        return self.shapelet_order if self.basis == "shapelets" else self.source_grid


class LikelihoodData(NamedTuple):
    """What the likelihood compares the model with.

    ``image`` has masked (and NaN) pixels set to 0; ``mask`` is True where used;
    ``sigma`` is the Gaussian σ map (counts/s) or None for ``"poisson"``;
    ``exptime`` (s, 0 when unknown) and ``background_rms`` (counts/s) are 0-d arrays,
    so that the whole tuple is a pytree of arrays that can cross ``jax.jit``.
    """

    image: jnp.ndarray
    mask: jnp.ndarray
    sigma: jnp.ndarray | None
    exptime: jnp.ndarray
    background_rms: jnp.ndarray


def component_params(group: str, name: str) -> tuple[str, ...]:
    """Parameter names of one component (what the model may sample)."""
    if group == "lens":
        if name not in MASS_PROFILES:
            raise LensgenError(f"unknown lens model {name!r}; choose from {sorted(MASS_PROFILES)}")
        return tuple(MASS_PROFILES[name].params)
    if name == "vae":
        return VAE_PARAMS
    base = name.removeprefix("vae+")
    if base in LINEAR_PARAMS:
        extra = LINEAR_PARAMS[base]
        return VAE_PARAMS + extra if name.startswith("vae+") else ("center_x", "center_y", *extra)

    if name not in LIGHT_PROFILES or name == "INTERPOL":
        raise LensgenError(
            f"unsupported {group} light model {name!r}; use SERSIC_ELLIPSE"
            + (f" or one of {list(SOURCES)}" if group == "source" else "")
        )
    return tuple(LIGHT_PROFILES[name].params)


def parameter_names(spec: ModelSpec) -> list[str]:
    """Flat names ``<group>.<index>.<param>`` of every scalar parameter of ``spec``."""
    names = []
    for i, lens in enumerate(spec.lens):
        names += [f"lens.{i}.{p}" for p in component_params("lens", lens)]
    names += [f"source.0.{p}" for p in component_params("source", spec.source)]
    for i, light in enumerate(spec.lens_light):
        names += [f"lens_light.{i}.{p}" for p in component_params("lens_light", light)]
    for k in range(spec.subhalos):
        names += [f"subhalo.{k}.{p}" for p in SUBHALO_SITES]
    return names


def source_light_names(spec: ModelSpec, linear: bool = True) -> tuple[str, ...]:
    """The renderer's light-profile names of the source (the learned source and a pixel
    grid are INTERPOL, shapelets SHAPELETS; ``linear=False`` leaves the marginalised
    part out)."""
    if spec.source == "SERSIC_ELLIPSE":
        return (spec.source,)
    names = ("INTERPOL",) if spec.learned else ()
    if spec.linear and linear:
        names += ("SHAPELETS",) if spec.basis == "shapelets" else ("INTERPOL",)
    return names


def _sample_component(group: str, index: int, names, priors: dict[str, Prior]) -> dict:
    values = {}
    for p in names:
        site = f"{group}.{index}.{p}"
        prior = priors[site]
        values[p] = prior.args[0] if prior.fixed else numpyro.sample(site, prior.to_numpyro())
    return values


def build_params(spec: ModelSpec, priors: dict[str, Prior], source_model=None) -> dict:
    """Sample every parameter and assemble the renderer's parameter pytree (inside a model)."""
    params: dict[str, list[dict]] = {"lens": [], "source": [], "lens_light": []}
    for i, lens in enumerate(spec.lens):
        params["lens"].append(_sample_component("lens", i, component_params("lens", lens), priors))
    if spec.subhalos:
        for k in range(spec.subhalos):
            sub = _sample_component("subhalo", k, SUBHALO_SITES, priors)
            m200 = 10.0 ** jnp.asarray(sub["log10_m"])
            tnfw = tnfw_from_mass(m200, sub["center_x"], sub["center_y"], spec.halos)
            params["lens"].append(tnfw)
    src = _sample_component("source", 0, component_params("source", spec.source), priors)
    if spec.linear:
        # The basis sits on the source's centre (the decoded galaxy's core centroid).
        params["linear"] = {k: src.pop(k) for k in LINEAR_PARAMS[spec.basis]}
        params["linear"].update(center_x=src["center_x"], center_y=src["center_y"])
    if spec.learned:
        d = source_model.latent_dim
        std_normal = dist.Normal(jnp.zeros(d), 1.0).to_event(1)
        if spec.latent == "flow":
            u = numpyro.sample("source.u", std_normal)
            z = numpyro.deterministic("source.z", source_model.from_normal(u))
        else:
            z = numpyro.sample("source.z", std_normal)
        params["source"].append(interpol_params(source_model.decode(z), **src))
    elif not spec.linear:
        params["source"].append(src)
    for i, light in enumerate(spec.lens_light):
        names = component_params("lens_light", light)
        params["lens_light"].append(_sample_component("lens_light", i, names, priors))
    return params


class LinearSource(NamedTuple):
    """The marginalised part of a source: ``rest`` renders everything else (parameter
    pytree → image), ``basis`` the lensed basis functions
    (:func:`lensgen.lensing.render.make_basis_renderer`); ``pixel_scale`` in arcsec;
    ``kind`` the basis; ``regulariser`` R with ``log_det_reg`` = log det R (None and 0
    for R = I)."""

    rest: Callable
    basis: Callable
    pixel_scale: float
    kind: str
    regulariser: Any = None
    log_det_reg: float = 0.0


def linear_fit(linear: LinearSource, params: dict, data: LikelihoodData) -> tuple[LinearFit, Any]:
    """The marginalised amplitudes at ``params`` (:mod:`lensgen.infer.linear`)
    and the image of the rest of the model.

    The log evidence includes the Gaussian normalisation −Σ log σ − (N/2) log 2π over
    the used pixels, as the Normal likelihood of the other sources does.
    """
    rest = linear.rest(params)
    g = params["linear"]
    scale = g["beta"] if linear.kind == "shapelets" else g["width"]
    basis = linear.basis(params["lens"], scale, g["center_x"], g["center_y"])
    sigma = likelihood_sigma(data, data.image)  # for "poisson": σ from the data
    weight = jnp.where(data.mask, sigma**-2, 0.0)
    lam = precision(g["reg"], weight, linear.pixel_scale)
    fit = marginalise(basis, data.image - rest, weight, lam, linear.regulariser, linear.log_det_reg)
    used = jnp.sum(data.mask)
    norm = -jnp.sum(jnp.where(data.mask, jnp.log(sigma), 0.0)) - 0.5 * used * jnp.log(2 * jnp.pi)
    return fit._replace(log_evidence=fit.log_evidence + norm), rest


def with_amplitudes(params: dict, amplitudes) -> dict:
    """``params`` with the amplitudes appended to the source as a SHAPELETS or (grid)
    INTERPOL component, as :func:`source_light_names` lists it."""
    g = params["linear"]
    if "beta" in g:
        part = {"amp": amplitudes, "beta": g["beta"], "center_x": g["center_x"],
                "center_y": g["center_y"]}  # fmt: skip
    else:
        part = grid_interpol(amplitudes, g["width"], g["center_x"], g["center_y"])
    return {**params, "source": [*params["source"], part]}


def make_model(
    spec: ModelSpec,
    priors: dict[str, Prior],
    renderer,
    source_model=None,
    linear: LinearSource | None = None,
):
    """The NumPyro model function ``model(data)`` for ``spec``.

    The observation enters as the argument ``data`` (a :class:`LikelihoodData`), not
    through the closure, so one traced and compiled model (MAP optimiser, NUTS
    kernel, SVI step) serves every observation of the same shape.

    Parameters
    ----------
    spec : ModelSpec
    priors : dict
        ``{parameter name: Prior}`` covering :func:`parameter_names` of ``spec``.
    renderer : callable
        Parameter pytree → model image (counts/s per pixel), e.g. from
        :func:`lensgen.lensing.render.make_renderer`.
    source_model : SourceModel, optional
        Required for the learned sources (``vae``, ``vae+shapelets``).
    linear : LinearSource, optional
        Required for the shapelet sources, whose likelihood is the marginal likelihood
        of the amplitudes; ``renderer`` is then not used by the likelihood.
    """
    missing = [n for n in parameter_names(spec) if n not in priors]
    if missing:
        raise LensgenError(f"no prior for parameter(s) {missing}")
    if spec.learned and source_model is None:
        raise LensgenError("the learned source needs a source model")
    if spec.linear and linear is None:
        raise LensgenError("a shapelet source needs its basis renderer (LinearSource)")

    def model(data: LikelihoodData):
        params = build_params(spec, priors, source_model)
        if spec.linear:
            numpyro.factor("obs", linear_fit(linear, params, data)[0].log_evidence)
            return
        mu = renderer(params)
        sigma = likelihood_sigma(data, mu)
        numpyro.sample("obs", dist.Normal(mu, sigma).mask(data.mask).to_event(2), obs=data.image)

    return model


def likelihood_sigma(data: LikelihoodData, mu):
    """σ per pixel for model image ``mu``: the Gaussian noise map, or for ``"poisson"``
    (``data.sigma`` is None) σ² = background_rms² + max(mu, 0)/exptime."""
    if data.sigma is not None:
        return data.sigma
    return jnp.sqrt(data.background_rms**2 + jnp.maximum(mu, 0.0) / data.exptime)


def likelihood_data(
    image: np.ndarray,
    likelihood: str,
    noise_map: np.ndarray | None,
    exptime: float | None,
    background_rms: float | None,
    mask: np.ndarray | None = None,
    where: str = "observation",
    sigma_name: str = "noise map",
) -> tuple[LikelihoodData, int]:
    """Clean the data for :func:`make_model`; returns the data and the number of NaN pixels.

    NaN (or non-finite) image or noise pixels and pixels where ``mask`` is False are
    excluded from the likelihood.

    Raises
    ------
    LensgenError
        Gaussian without a noise map, Poisson without an exposure time, a mask of
        the wrong shape, or no usable pixel (the message names ``where``, and
        ``sigma_name`` when the σ map leaves none, and says why each pixel is out).
    """
    if likelihood == "gaussian" and noise_map is None:
        raise LensgenError("the Gaussian likelihood needs a noise map")
    if likelihood == "poisson" and not exptime:
        raise LensgenError("the Poisson likelihood needs the exposure time")
    image = np.asarray(image, dtype=np.float64)
    good = np.isfinite(image)
    n_nan = int((~good).sum())
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise LensgenError(f"mask shape {mask.shape} differs from the image {image.shape}")
        good &= mask
    sigma = None
    sigma_ok = np.ones(image.shape, bool)
    if likelihood == "gaussian":
        sigma = np.asarray(noise_map, dtype=np.float64)
        sigma_ok = np.isfinite(sigma) & (sigma > 0)
        good &= sigma_ok
        sigma = np.where(sigma_ok, sigma, 1.0)
    if not good.any():
        raise LensgenError(_no_pixels(where, image, mask, sigma_ok, noise_map, sigma_name))
    return (
        LikelihoodData(
            image=jnp.asarray(np.where(good, image, 0.0)),
            mask=jnp.asarray(good),
            sigma=None if sigma is None else jnp.asarray(sigma),
            exptime=jnp.asarray(float(exptime or 0.0)),
            background_rms=jnp.asarray(float(background_rms or 0.0)),
        ),
        n_nan,
    )


def _no_pixels(where, image, mask, sigma_ok, noise_map, sigma_name) -> str:
    """Why no pixel is left for the likelihood, in one line."""
    if noise_map is not None and not sigma_ok.any():
        sigma = np.asarray(noise_map, dtype=np.float64)
        if np.all(sigma == 0):
            return (f"{where}: {sigma_name}: all σ are 0 (a noiseless image?), so no pixel can "
                    "be fitted; supply σ > 0 (e.g. --likelihood poisson with --exptime and "
                    "--background-rms)")  # fmt: skip
        return f"{where}: {sigma_name}: no pixel has a finite σ > 0, so no pixel can be fitted"
    if mask is not None and not mask.any():
        return f"{where}: the mask selects no pixel (it is all zeros)"
    n_nan, n_inf = int(np.isnan(image).sum()), int(np.isinf(image).sum())
    causes = [f"{n_nan} NaN", f"{n_inf} ±inf"]
    if mask is not None:
        causes.append(f"{int((~mask).sum())} masked out")
    if noise_map is not None:
        causes.append(f"{int((~sigma_ok).sum())} with σ ≤ 0 or not finite in the {sigma_name}")
    return f"{where}: no usable pixel among {image.size}: {', '.join(causes)}"
