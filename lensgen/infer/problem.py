"""The inference problem of one observation: settings, model, data and results.

:func:`build_problem` turns an :class:`~lensgen.io.fits.Observation` and an
:class:`InferConfig` into a :class:`Problem`: a NumPyro model that takes the
observed data as its argument, one jitted renderer, the cleaned data and the
priors. :func:`with_data` swaps in another observation of the same shape while
keeping the model (and so every compiled optimiser and sampler) unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from lensgen.errors import ConfigError, LensgenError
from lensgen.infer.model import (
    LikelihoodData,
    LinearSource,
    ModelSpec,
    build_params,
    is_learned,
    likelihood_data,
    likelihood_sigma,
    linear_fit,
    make_model,
    parameter_names,
    source_light_names,
    with_amplitudes,
)
from lensgen.infer.priors import Prior, format_priors, load_priors, resolve_priors
from lensgen.infer.programs import Programs
from lensgen.io.fits import read_observation
from lensgen.lensing.pixelgrid import gradient_regulariser
from lensgen.lensing.render import Scene, make_basis_renderer, make_renderer
from lensgen.source.model import load_source_model

GUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal")


@dataclass(frozen=True)
class InferConfig:
    """Settings of ``lensgen infer`` (TOML section-free keys; CLI flags override).

    ``lens = ()``, ``source = "auto"`` and ``lens_light = "auto"`` take the model
    from the file's SCENE cards (simulations), else SIE + SHEAR, the learned
    source and no lens light. ``likelihood = "auto"``: Gaussian with the NOISE
    map when the file has one, else the Poisson-like model from EXPTIME/BKGRMS.
    ``exptime`` (s) and ``background_rms`` (counts/s) supply or replace the header's.
    ``source = "pixels"`` (``"vae+pixels"``) adds a ``source_grid`` × ``source_grid``
    pixel grid, ``"shapelets"`` (``"vae+shapelets"``) a shapelet set of order
    ``shapelet_order``, whose amplitudes are marginalised; ``compare_sources`` first
    fits ``vae``, ``pixels`` and ``vae+pixels`` by MAP and reports their evidence
    (:mod:`lensgen.infer.compare`).
    NUTS draws up to ``num_samples`` per chain after ``num_warmup`` and stops early
    once every scalar parameter has R-hat < 1.01 and every mass parameter (``lens.*``,
    ``subhalo.*``) an effective sample size of at least ``target_ess`` (0: always draw
    ``num_samples``). Its trees are at most ``max_tree_depth`` deep while sampling and
    ``max_tree_depth_warmup`` deep during the warm-up.
    """

    method: Literal["nuts", "svi", "map", "nuts+svi"] = "nuts"
    lens: tuple[str, ...] = ()
    source: Literal[
        "auto", "vae", "SERSIC_ELLIPSE", "shapelets", "vae+shapelets", "pixels", "vae+pixels"
    ] = "auto"
    lens_light: Literal["auto", "none", "SERSIC_ELLIPSE"] = "auto"
    source_model: str = ""
    latent_prior: Literal["auto", "flow", "normal"] = "auto"
    likelihood: Literal["auto", "gaussian", "poisson"] = "auto"
    priors: str = ""
    mask: str = ""
    exptime: float | None = None
    background_rms: float | None = None
    num_chains: int = 4
    num_warmup: int = 200
    num_samples: int = 2000
    target_ess: int = 400
    target_accept: float = 0.8
    max_tree_depth: int = 8
    max_tree_depth_warmup: int = 5
    dense_mass: bool = True
    mass_matrix: Literal["refine", "laplace", "adapt"] = "refine"
    map_steps: int = 600
    map_restarts: int = 4
    map_lr: float = 0.03
    svi_guide: Literal["AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal"] = (
        "AutoMultivariateNormal"
    )
    svi_steps: int = 1000
    svi_lr: float = 0.01
    svi_samples: int = 2000
    shapelet_order: int = 12
    source_grid: int = 16
    compare_sources: bool = False

    def __post_init__(self) -> None:
        for name in ("num_chains", "num_samples", "map_steps", "map_restarts", "svi_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_warmup", "svi_steps", "target_ess"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.target_accept < 1.0:
            raise ConfigError(f"target_accept must be in (0, 1), got {self.target_accept}")
        if not 0 <= self.shapelet_order <= 30:
            raise ConfigError(f"shapelet_order must be in 0..30, got {self.shapelet_order}")
        if not 3 <= self.source_grid <= 100:
            raise ConfigError(
                f"source_grid must be in 3..100 (nodes a side), got {self.source_grid}"
            )
        for name in ("max_tree_depth", "max_tree_depth_warmup"):
            if not 1 <= getattr(self, name) <= 15:
                raise ConfigError(f"{name} must be in 1..15, got {getattr(self, name)}")
        for name in ("svi_lr", "map_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        for name, unit in (("exptime", "s"), ("background_rms", "counts/s")):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0 ({unit}), got {value}")


class Problem(NamedTuple):
    """Everything needed to evaluate and plot the model of one observation.

    ``model`` is called as ``model(data)``; ``data`` is this observation's
    :class:`~lensgen.infer.model.LikelihoodData`; ``programs`` holds the model's
    compiled programs (:class:`~lensgen.infer.programs.Programs`), kept by
    :func:`with_data` so that other observations of the same shape reuse them.
    ``linear`` renders the marginalised part of a shapelet source (None otherwise);
    ``renderer`` renders the whole model once the amplitudes are known
    (:func:`render_values`).
    """

    spec: ModelSpec
    priors: dict[str, Prior]
    model: Any
    renderer: Any
    scene: Any
    data: LikelihoodData
    source_model: Any
    psf: np.ndarray | None
    programs: Programs
    linear: LinearSource | None = None


class InferenceResult(NamedTuple):
    """Posterior draws and diagnostics of one method.

    ``samples`` maps site names to arrays (chain, draw, ...) in constrained space
    (for SVI and MAP one chain); ``sample_stats`` holds NUTS per-draw statistics
    (``diverging``, ``lp``, ``acceptance_rate``, ``n_steps``); ``point`` the MAP
    values used to initialise; ``diagnostics`` what the method measured: always
    ``wall_time_s`` and ``timings`` (seconds per stage), NUTS also ``divergences``,
    ``mean_steps`` (leapfrog steps per draw), ``ess``/``rhat`` of the stopping
    parameters and ``converged``; SVI ``elbo``; MAP ``map_loss``, ``map_chi2``. A
    quantity a method does not measure is absent, never zero.
    """

    method: str
    samples: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    point: dict[str, np.ndarray]
    diagnostics: dict[str, Any]


def _scene_defaults(
    config: InferConfig, scene: dict | None, where: str
) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """Lens, source and lens-light models: the config's, else the file's ``scene``."""
    scene = scene or {}
    # A simulated subhalo population is not part of the smooth model fitted here
    # (``--subhalos N`` fits subhalos explicitly; see lensgen.infer.substructure).
    file_lens = tuple(n for n in scene.get("lens") or () if n != "SUBHALOS")
    lens = tuple(config.lens) or file_lens or ("SIE", "SHEAR")
    if config.source != "auto":
        source = config.source
    else:
        names = scene.get("source") or ["INTERPOL"]
        if len(names) != 1 or names[0] not in ("INTERPOL", "SERSIC_ELLIPSE"):
            raise LensgenError(
                f"{where}: cannot model the source {names}; pass --source (vae, pixels, "
                "vae+pixels, shapelets, vae+shapelets or SERSIC_ELLIPSE)"
            )
        source = "vae" if names[0] == "INTERPOL" else "SERSIC_ELLIPSE"
    if config.lens_light == "auto":
        light = tuple(scene.get("lens_light") or ())
    else:
        light = () if config.lens_light == "none" else (config.lens_light,)
    return lens, source, light


def _likelihood(
    config: InferConfig, obs, kind: str | None = None
) -> tuple[str, np.ndarray | None, float | None, float]:
    """Likelihood kind, σ map, exposure time and background rms for ``obs``."""
    where = obs.path or "observation"
    exptime = config.exptime if config.exptime is not None else obs.exptime
    bkg = config.background_rms if config.background_rms is not None else obs.background_rms
    for value, card, flag, unit in ((exptime, "EXPTIME", "--exptime", "s"),
                                    (bkg, "BKGRMS", "--background-rms", "counts/s")):  # fmt: skip
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise LensgenError(
                f"{where}: header card {card} = {value:g} must be >= 0 ({unit}); "
                f"correct it or pass {flag}"
            )
    kind = kind or config.likelihood
    if kind == "auto":
        kind = "gaussian" if obs.noise_map is not None else "poisson"
    if kind == "gaussian":
        if obs.noise_map is not None:
            return kind, obs.noise_map, exptime, bkg or 0.0
        if bkg is None:
            raise LensgenError(
                f"{where}: the Gaussian likelihood needs a noise map: add a NOISE extension "
                "(σ per pixel, counts/s) or the BKGRMS header keyword (counts/s), "
                "or pass --background-rms"
            )
        if bkg == 0:
            raise LensgenError(
                f"{where}: the Gaussian likelihood without a NOISE extension needs a background "
                "rms > 0 (σ would be 0 wherever the image is 0), got BKGRMS = 0; "
                "pass --background-rms (counts/s)"
            )
        sigma = np.sqrt(bkg**2 + (np.maximum(obs.image, 0.0) / exptime if exptime else 0.0))
        return kind, sigma, exptime, bkg
    if exptime is None:
        raise LensgenError(
            f"{where}: the Poisson likelihood needs the exposure time: add the EXPTIME header "
            "keyword (s) or pass --exptime (or use a NOISE extension with --likelihood gaussian)"
        )
    if exptime == 0:
        raise LensgenError(
            f"{where}: the Poisson likelihood needs an exposure time > 0, got EXPTIME = 0; "
            "pass --exptime (s)"
        )
    if bkg is None:
        raise LensgenError(
            f"{where}: the Poisson likelihood needs the background noise: add the BKGRMS header "
            "keyword (counts/s) or pass --background-rms"
        )
    if bkg == 0:
        raise LensgenError(
            f"{where}: the Poisson likelihood needs a background rms > 0 (σ would be 0 wherever "
            "the model is 0), got BKGRMS = 0; pass --background-rms (counts/s)"
        )
    return kind, None, exptime, bkg


MIN_SIDE = 8
"""Smallest image side (pixels) that inference accepts: a lens needs room for its arcs."""


def _checked_data(obs, kind: str, sigma, exptime, bkg, mask) -> LikelihoodData:
    """The likelihood data of ``obs``; refuses what cannot be fitted, warns about what is left out.

    Refused, with one line: an image smaller than ``MIN_SIDE`` pixels a side, no usable
    pixel (each cause named: NaN, ±inf, masked, σ = 0 in the NOISE map), and an image
    that is zero in every used pixel (nothing to fit). Warned: NaN and ±inf pixels and
    NOISE pixels with σ ≤ 0 or not finite, all left out of the likelihood.
    """
    where = obs.path or "observation"
    ny, nx = obs.image.shape
    if min(ny, nx) < MIN_SIDE:
        raise LensgenError(
            f"{where}: the image is {ny} × {nx} pixels, too small to fit; "
            f"inference needs at least {MIN_SIDE} × {MIN_SIDE}"
        )
    noise = "NOISE extension" if obs.noise_map is not None else "σ map from BKGRMS/EXPTIME"
    data, _ = likelihood_data(obs.image, kind, sigma, exptime, bkg, mask, where=str(where),
                              sigma_name=noise)  # fmt: skip
    image = np.asarray(obs.image, dtype=float)
    n_nan, n_inf = int(np.isnan(image).sum()), int(np.isinf(image).sum())
    bad = [f"{n_nan} NaN pixel(s)"] if n_nan else []
    bad += [f"{n_inf} pixel(s) at ±inf"] if n_inf else []
    if kind == "gaussian" and obs.noise_map is not None:
        s = np.asarray(sigma, dtype=float)
        n_sigma = int((~(np.isfinite(s) & (s > 0)) & np.isfinite(image)).sum())
        if n_sigma:
            bad.append(f"{n_sigma} pixel(s) with σ ≤ 0 or not finite in the NOISE extension")
    if bad:
        warnings.warn(f"{where}: {' and '.join(bad)} masked out of the likelihood", stacklevel=3)
    used = np.asarray(data.mask)
    values = np.asarray(data.image)[used]
    if not np.any(values != 0):
        raise LensgenError(
            f"{where}: the image is all zeros (in all {values.size} used pixels); "
            "there is no signal to fit"
        )
    snr = values / np.asarray(likelihood_sigma(data, data.image))[used]
    if not np.any(snr > 3.0):
        warnings.warn(
            f"{where}: no pixel is brighter than 3σ; the lens is not detected and the fit "
            "will mostly follow the priors",
            stacklevel=3,
        )
    return data


def build_problem(
    config: InferConfig, obs, source_model=None, mask: np.ndarray | None = None
) -> Problem:
    """The model of ``obs`` under ``config`` (loads the source model and priors as needed)."""

    lens, source, light = _scene_defaults(config, obs.scene, str(obs.path or "observation"))
    kind, sigma, exptime, bkg = _likelihood(config, obs)
    latent = "normal"
    if is_learned(source):
        if source_model is None:
            use_flow = False if config.latent_prior == "normal" else None
            source_model = load_source_model(config.source_model or None, use_flow=use_flow)
        if config.latent_prior == "flow" and not source_model.has_flow:
            raise LensgenError("--latent-prior flow: the source model has no flow")
        latent = "flow" if config.latent_prior != "normal" and source_model.has_flow else "normal"
    spec = ModelSpec(lens=lens, source=source, lens_light=light, latent=latent, likelihood=kind,
                     shapelet_order=config.shapelet_order, source_grid=config.source_grid)  # fmt: skip
    overrides = load_priors(config.priors) if config.priors else {}
    priors = resolve_priors(parameter_names(spec), overrides, config.priors or "[priors]")
    data = _checked_data(obs, kind, sigma, exptime, bkg, mask)
    _check_basis_fits(spec, data, str(obs.path or "observation"))
    scene = Scene(
        lens=lens,
        source=source_light_names(spec),
        lens_light=light,
        shape=obs.image.shape,
        pixel_scale=obs.pixel_scale,
        supersample=obs.supersample,
        convolution=obs.convolution,
        orientation=obs.orientation,
    )
    psf = _render_kernel(obs)
    kernel = None if psf is None else jnp.asarray(psf)
    renderer = make_renderer(scene, kernel)
    linear = None
    if spec.linear:
        rest = dataclasses.replace(scene, source=source_light_names(spec, linear=False))
        basis = make_basis_renderer(scene, spec.basis, spec.basis_size, kernel)
        reg = None if spec.basis == "shapelets" else gradient_regulariser(spec.source_grid)
        log_det = 0.0 if reg is None else float(np.linalg.slogdet(reg)[1])
        linear = LinearSource(make_renderer(rest, kernel), basis, scene.pixel_scale,
                              spec.basis, reg, log_det)  # fmt: skip
    model = make_model(spec, priors, renderer, source_model, linear)
    return Problem(
        spec, priors, model, renderer, scene, data, source_model, psf, Programs(model), linear
    )


def _check_basis_fits(spec: ModelSpec, data: LikelihoodData, where: str) -> None:
    """Refuse a marginalised source with more amplitudes than the image has used pixels."""
    if not spec.linear:
        return
    used = int(np.asarray(data.mask).sum())
    if spec.basis == "pixels":
        k, what = spec.source_grid**2, f"source grid {spec.source_grid} × {spec.source_grid}"
        fix = f"--source-grid ≤ {math.isqrt(used)}"
    else:
        k, what = (spec.shapelet_order + 1) * (spec.shapelet_order + 2) // 2, "shapelet set"
        fix = "a smaller --shapelet-order"
    if k > used:
        raise LensgenError(
            f"{where}: the {what} has {k} amplitudes, more than the image's {used} used "
            f"pixels can constrain; use {fix}"
        )


def _render_kernel(obs) -> np.ndarray | None:
    """The PSF kernel the file's model was convolved with: PSFSUPER (sampled on the
    sub-pixels) when its CONVMODE is 'subpixel', else PSF."""
    kernel = obs.psf_supersampled if obs.convolution == "subpixel" else obs.psf
    return None if kernel is None else np.asarray(kernel)


def with_data(problem: Problem, obs, mask: np.ndarray | None = None, config=None) -> Problem:
    """``problem`` with the data of ``obs`` (same image shape, pixel scale and supersampling).

    The model, renderer and priors are kept, so compiled MAP, NUTS and SVI
    programs are reused (used by the calibration over many simulated lenses). The
    PSF of ``obs`` must equal the problem's, which is baked into the renderer.
    """
    where = obs.path or "observation"
    if (
        tuple(obs.image.shape) != problem.scene.shape
        or not np.isclose(obs.pixel_scale, problem.scene.pixel_scale)
        or obs.supersample != problem.scene.supersample
    ):
        raise LensgenError(
            f"{where}: image {obs.image.shape} at {obs.pixel_scale}″ (supersample "
            f"{obs.supersample}) differs from the problem's {problem.scene.shape} at "
            f"{problem.scene.pixel_scale}″ ({problem.scene.supersample})"
        )
    if obs.convolution != problem.scene.convolution:
        raise LensgenError(
            f"{where}: CONVMODE = {obs.convolution!r} differs from the problem's "
            f"{problem.scene.convolution!r}; build a new problem"
        )
    if not np.allclose(obs.orientation, problem.scene.orientation, atol=1e-9):
        raise LensgenError(
            f"{where}: the WCS orients the pixels as {obs.orientation}, the problem's "
            f"image as {problem.scene.orientation}; build a new problem"
        )
    psf = _render_kernel(obs)
    same_psf = (psf is None and problem.psf is None) or (
        psf is not None
        and problem.psf is not None
        and psf.shape == problem.psf.shape
        and np.allclose(psf, problem.psf)
    )
    if not same_psf:
        raise LensgenError(f"{where}: the PSF differs from the problem's; build a new problem")
    config = config or InferConfig()
    kind, sigma, exptime, bkg = _likelihood(config, obs, problem.spec.likelihood)
    data = _checked_data(obs, kind, sigma, exptime, bkg, mask)
    return problem._replace(data=data)


def render_values(problem: Problem, values: dict[str, Any]) -> tuple[dict, jnp.ndarray]:
    """Parameter pytree and model image at given site values (unsampled sites from the prior)."""
    values = {k: jnp.asarray(v) for k, v in values.items()}
    with handlers.seed(rng_seed=0), handlers.substitute(data=values):
        # Parameters only: the likelihood (and so the data) is not needed here.
        params = build_params(problem.spec, problem.priors, problem.source_model)
    if problem.linear is None:
        return params, problem.renderer(params)
    fit, rest = linear_fit(problem.linear, params, problem.data)
    return with_amplitudes(params, fit.amplitudes), rest + fit.image


def normalised_residuals(problem: Problem, model) -> np.ndarray:
    """(data − model)/σ per pixel with the likelihood's σ; NaN where it is not used."""
    data = problem.data
    model = np.asarray(model, dtype=float)
    sigma = np.asarray(likelihood_sigma(data, jnp.asarray(model)), dtype=float)
    resid = (np.asarray(data.image, dtype=float) - model) / sigma
    return np.where(np.asarray(data.mask), resid, np.nan)


def reduced_chi2(problem: Problem, model) -> float:
    """χ² per used pixel of ``model`` against the data."""
    resid = normalised_residuals(problem, model)
    return float(np.nansum(resid**2) / max(int(np.isfinite(resid).sum()), 1))


def raw_key(key) -> jnp.ndarray:
    """NumPyro wants raw uint32 keys; accept new-style typed keys too."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def load_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A FITS mask (primary HDU, non-zero = use the pixel) matching the image shape."""
    from astropy.io import fits

    try:
        data = fits.getdata(path)
    except (OSError, ValueError) as exc:
        raise LensgenError(f"mask file {path}: cannot read: {exc}") from None
    if data is None or data.shape != tuple(shape):
        got = None if data is None else data.shape
        raise LensgenError(f"mask file {path}: shape {got} differs from the image {tuple(shape)}")
    return np.asarray(data) != 0


def prior_table(config: InferConfig, obs_path: str | Path | None = None) -> str:
    """The resolved priors of the model ``config`` gives for ``obs_path`` (or no file), as TOML."""

    scene = read_observation(obs_path).scene if obs_path is not None else None
    lens, source, light = _scene_defaults(config, scene, str(obs_path))
    spec = ModelSpec(lens=lens, source=source, lens_light=light)
    overrides = load_priors(config.priors) if config.priors else {}
    priors = resolve_priors(parameter_names(spec), overrides, config.priors or "[priors]")

    text = format_priors(priors)
    if spec.learned:
        text += "# source latent: u ~ N(0, I), z = flow(u) when the model has a flow, else z ~ N(0, I)\n"
    return text
