"""The ``lensgen simulate`` workflow: draw parameters, render, add noise, write FITS.

One lens (:func:`simulate_observation`) or a vmapped batch of ``n`` lenses
(:func:`simulate_batch`) from a :class:`~lensgen.simulate.scene.SimulateConfig`.
The learned source (``type = "VAE"``) is rendered as lenstronomy's ``INTERPOL``
profile of the decoded stamp, placed by its light
(:func:`lensgen.source.model.interpol_params`): core flux ``flux`` counts/s, core
centroid ``center_x``/``center_y`` and core radius ``size`` arcsec
(:func:`lensgen.source.model.core_moments`), as ``lensgen infer`` parametrises it.
A ``[substructure]`` section adds one ``"SUBHALOS"`` lens component (``(K,)`` arrays,
:mod:`lensgen.lensing.substructure`) whose truths go to a ``SUBHALOS`` FITS table.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lensgen import __version__
from lensgen.devices import map_sharded
from lensgen.distributions import Distribution
from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_outputs, check_outputs, refuse_input_outputs
from lensgen.io.fits import Observation, write_batch, write_observation
from lensgen.io.interrupt import check_interrupt
from lensgen.io.source_image import read_source_image
from lensgen.lensing import instrument
from lensgen.lensing import psf_supersampling as supersampling
from lensgen.lensing.light import check_light_values
from lensgen.lensing.raytrace import validate_lens
from lensgen.lensing.render import Scene, make_renderer, render_source_plane
from lensgen.lensing.substructure import SUBHALO_PARAMS, SUBHALOS, check_subhalos
from lensgen.plots import simulation_preview
from lensgen.simulate.population import sample_subhalos, subhalo_table
from lensgen.simulate.scene import (
    PARAMETRIC_SOURCE,
    VAE_PARAMS,
    Component,
    SimulateConfig,
    dumps_config,
)
from lensgen.source.model import default_model_path, interpol_params, load_source_model

GROUPS = ("lens", "source", "lens_light")
IMAGE_PARAMS = {"flux": 50.0, "center_x": 0.0, "center_y": 0.0, "phi_G": 0.0}
"""Drawable parameters of an ``IMAGE`` source and their defaults (its ``file`` and
``pixel_scale`` are fixed): total flux (counts/s), position of the image centre
(arcsec) and rotation (radians)."""
SOURCE_ZOOM = 4
"""The true-source image (``SOURCE`` extension) has this many times finer pixels."""


@dataclass(frozen=True)
class Batch:
    """``n`` simulated lenses: observed and noiseless images plus their parameters."""

    images: np.ndarray  # (n, ny, nx) counts/s per pixel
    models: np.ndarray  # (n, ny, nx) noiseless
    noise_maps: np.ndarray  # (n, ny, nx) σ per pixel
    params: dict[str, np.ndarray]  # flat name → (n,) values
    latents: np.ndarray | None  # (n, latent_dim) for a learned source
    stamps: np.ndarray | None  # (n, H, W) decoded source stamps for a learned source
    interpol: dict[str, np.ndarray] | None  # INTERPOL parameters of the learned source, (n, ...)
    psf: np.ndarray | None
    scene: Scene
    source_label: str
    subhalos: dict[str, np.ndarray] | None = None  # (n, K) arrays from sample_subhalos
    config: SimulateConfig | None = None  # the config as rendered (after source fallback)
    psf_supersampled: np.ndarray | None = None  # the kernel of scene.convolution == "subpixel"


class InstrumentPSF(NamedTuple):
    """The PSF of an instrument section: where it is applied and its kernels (unit sum).

    ``psf`` is sampled at the pixel scale (the observation's ``PSF`` extension);
    ``supersampled`` at pixel_scale / supersample, given when ``convolution`` is
    ``"subpixel"`` (``PSFSUPER``).
    """

    psf: np.ndarray | None
    supersampled: np.ndarray | None
    convolution: str

    @property
    def kernel(self) -> np.ndarray | None:
        """The kernel the renderer applies."""
        return self.supersampled if self.convolution == "subpixel" else self.psf


def make_psf(cfg: SimulateConfig) -> InstrumentPSF:
    """The PSF the instrument section asks for, and where to apply it.

    ``convolution = "auto"`` picks :func:`~lensgen.lensing.psf_supersampling.auto_convolution`
    of the PSF's FWHM when a supersampled kernel is available: computed for the
    Gaussian and Moffat PSFs, read for a ``psf_file`` with ``psf_supersample > 1``
    (FWHM measured from the kernel); otherwise ``"pixel"``.
    """
    ins = cfg.instrument
    s, scale = ins.supersample, ins.pixel_scale
    if ins.psf == "none":
        return InstrumentPSF(None, None, "pixel")
    supersampled = None
    if ins.psf == "gaussian":
        psf = instrument.gaussian_psf(ins.psf_fwhm, scale)
        fwhm = ins.psf_fwhm
    elif ins.psf == "moffat":
        psf = instrument.moffat_psf(ins.psf_fwhm, ins.moffat_beta, scale)
        fwhm = ins.psf_fwhm
    elif ins.psf_supersample > 1:
        supersampled = supersampling.load_supersampled_psf(ins.psf_file, s)
        psf = supersampling.bin_psf(supersampled, s)
        fwhm = supersampling.kernel_fwhm(supersampled, scale / s)
    else:
        psf = instrument.load_psf(ins.psf_file)
        # Without supersampling the pixel-level kernel is also the sub-pixel one;
        # otherwise there is no supersampled kernel and the convolution stays on pixels.
        supersampled = psf if s == 1 else None
        fwhm = None if s > 1 else supersampling.kernel_fwhm(psf, scale)
    convolution = ins.convolution
    if convolution == "auto":
        convolution = "pixel" if fwhm is None else supersampling.auto_convolution(fwhm / scale, s)
    if convolution == "subpixel" and supersampled is None:
        supersampled = (
            supersampling.gaussian_psf_supersampled(ins.psf_fwhm, scale, s)
            if ins.psf == "gaussian"
            else supersampling.moffat_psf_supersampled(ins.psf_fwhm, ins.moffat_beta, scale, s)
        )
    if convolution == "pixel":
        supersampled = None
    return InstrumentPSF(np.asarray(psf), supersampled, convolution)


def _draw(key: jax.Array, spec: float | list[float] | Distribution, n: int) -> np.ndarray:
    """``n`` values of one parameter: a constant, a constant vector (shape (n, k), e.g.
    shapelet amplitudes) or draws from its distribution."""
    if isinstance(spec, Distribution):
        return spec.draw(key, n)
    if isinstance(spec, list):
        return np.tile(np.asarray(spec, dtype=np.float64), (n, 1))
    return np.full(n, float(spec))


def _resolve_source(cfg: SimulateConfig):
    """Load the learned source model if the config asks for one.

    Returns ``(cfg, model)``; with no trained model available (no path given and no
    embedded default) the parametric default source replaces the learned one.
    """
    if not any(c.type == "VAE" for c in cfg.source):
        return cfg, None

    path = cfg.source_model.path or None
    if path is None and not default_model_path().is_dir():
        warnings.warn(
            "no trained source model available; using the parametric Sérsic source", stacklevel=2
        )
        return replace(cfg, source=(PARAMETRIC_SOURCE,)), None
    return cfg, load_source_model(path, use_flow=cfg.source_model.use_flow)


def _check_vae_params(comp: Component, where: str) -> None:
    for name in comp.params:
        if name == "scale":
            raise LensgenError(
                f"{where} (VAE): 'scale' is no longer a parameter of the learned source; give "
                "'size', the core radius of its light in arcsec (0.18 ≈ the old scale = 0.03)"
            )
        if name not in VAE_PARAMS and name != "z":
            raise LensgenError(
                f"{where} (VAE): unknown parameter '{name}' (valid: {', '.join([*VAE_PARAMS, 'z'])})"
            )


def _image_params(comp: Component, where: str) -> dict[str, Any]:
    """The drawable parameters of an ``IMAGE`` source (defaults filled, keys checked)."""
    if "file" not in comp.params:
        raise LensgenError(f"{where} (IMAGE): needs 'file', the FITS image of the source")
    params = {k: v for k, v in comp.params.items() if k not in ("file", "pixel_scale")}
    for name in params:
        if name not in IMAGE_PARAMS:
            raise LensgenError(
                f"{where} (IMAGE): unknown parameter '{name}' "
                f"(valid: file, pixel_scale, {', '.join(IMAGE_PARAMS)})"
            )
    return {**IMAGE_PARAMS, **params}


def image_interpol(comp: Component, p: dict[str, Any]) -> dict[str, Any]:
    """INTERPOL parameters (batched over lenses) of an ``IMAGE`` source with drawn ``p``."""
    scale = comp.params.get("pixel_scale")
    image, scale, angle = read_source_image(
        comp.params["file"], None if scale is None else float(scale)
    )
    # INTERPOL takes surface brightness: flux per pixel / pixel area (flux/arcsec²).
    sb = jnp.asarray(image)[None] * (jnp.asarray(p["flux"]) / scale**2)[:, None, None]
    n = sb.shape[0]
    # ``phi_G`` turns the image on the sky; its WCS's own rotation comes first.
    return {"image": sb, "amp": jnp.ones(n), "center_x": p["center_x"],
            "center_y": p["center_y"], "phi_G": p["phi_G"] + angle,
            "scale": jnp.full(n, scale)}  # fmt: skip


def _check_light(cfg: SimulateConfig, flat: dict[str, np.ndarray]) -> None:
    """Refuse light parameters that render nothing or nonsense (``R_sersic <= 0``, …)."""
    for group in ("source", "lens_light"):
        for ci, comp in enumerate(getattr(cfg, group)):
            prefix = f"{group}.{ci}."
            p = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            where = f"{group} component {ci}"
            if comp.type == "IMAGE":
                if not np.all(p["flux"] > 0):
                    raise LensgenError(
                        f"{where} (IMAGE): flux must be > 0, got {p['flux'].min():g}"
                    )
                continue
            if comp.type != "VAE":
                check_light_values(comp.type, p, where)
                continue
            for name in ("flux", "size"):
                if not np.all(p[name] > 0):
                    raise LensgenError(
                        f"{where} (VAE): {name} must be > 0, got {p[name][~(p[name] > 0)][0]:g}"
                    )


BYTES_PER_RAY = 160
"""Peak memory per supersampled pixel and lens while rendering (coordinates,
deflections, source light, the FFT convolution). Measured as the growth of the peak
resident memory of ``lensgen simulate`` from 100 to 800 pixels a side
(supersampling 2): 148 bytes with the learned source, 79 with a Sérsic source."""


def available_memory() -> int:
    """Bytes of memory available to this process (Linux ``MemAvailable``, else total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(ins: Any, n: int) -> None:
    """Refuse, before allocating anything, a render that cannot fit in memory."""
    side = ins.npix * ins.supersample
    need = n * side * side * BYTES_PER_RAY
    have = available_memory()
    if need > have:
        lenses = f"{n} lenses" if n > 1 else "one lens"
        raise LensgenError(
            f"npix={ins.npix} × supersample={ins.supersample} for {lenses} needs about "
            f"{_gib(need)} of memory; {_gib(have)} is available (lower --npix, --supersample "
            "or --n)"
        )


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes < 2**40 else f"{nbytes / 2**40:.3g} TiB"


def _draw_subhalos(cfg: SimulateConfig, key: jax.Array, flat: dict, n: int) -> dict:
    """``n`` realisations of the ``[substructure]`` population around each main lens."""
    pop = cfg.substructure
    if pop.ring_radius <= 0 and "lens.0.theta_E" not in flat:
        raise LensgenError(
            f"[substructure]: the main lens ({cfg.lens[0].type}) has no theta_E; "
            "set ring_radius (arcsec)"
        )
    zeros = np.zeros(n)
    theta, cx, cy = (
        jnp.asarray(flat.get(f"lens.0.{k}", zeros)) for k in ("theta_E", "center_x", "center_y")
    )
    draw = jax.vmap(lambda k, t, x, y: sample_subhalos(k, pop, t, x, y))
    out = {k: np.asarray(v) for k, v in draw(jax.random.split(key, n), theta, cx, cy).items()}
    check_subhalos(out, "[substructure]")
    return out


def simulate_batch(cfg: SimulateConfig, key: jax.Array, n: int) -> Batch:
    """Draw ``n`` parameter sets, render them in one vmapped call and add noise."""
    if n < 1:
        raise LensgenError(f"--n must be >= 1, got {n}")
    ins = cfg.instrument
    check_memory(ins, n)
    cfg, source_model = _resolve_source(cfg)
    psfs = make_psf(cfg)
    k_par, k_lat, k_noise = jax.random.split(key, 3)

    flat: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {g: [] for g in GROUPS}
    latents = None
    for gi, group in enumerate(GROUPS):
        for ci, comp in enumerate(getattr(cfg, group)):
            kc = jax.random.fold_in(jax.random.fold_in(k_par, gi), ci)
            params = dict(comp.params)
            if comp.type == "IMAGE":
                params = _image_params(comp, f"{group} component {ci}")
            if comp.type == "VAE":
                _check_vae_params(comp, f"{group} component {ci}")
                params = {**VAE_PARAMS, **params}
                z = params.pop("z", None)
                if z is not None:
                    z = np.asarray(z, dtype=np.float64)
                    if z.shape != (source_model.latent_dim,):
                        raise LensgenError(
                            f"{group} component {ci} (VAE): z has {z.size} values, the model's "
                            f"latent size is {source_model.latent_dim}"
                        )
                    latents = np.tile(z, (n, 1))
                else:
                    latents = np.asarray(source_model.sample(k_lat, n), dtype=np.float64)
            for pi, (pname, spec) in enumerate(sorted(params.items())):
                flat[f"{group}.{ci}.{pname}"] = _draw(jax.random.fold_in(kc, pi), spec, n)
            names[group].append("INTERPOL" if comp.type in ("VAE", "IMAGE") else comp.type)
    if sum(c.type in ("VAE", "IMAGE") for c in cfg.source) > 1:
        raise LensgenError("one VAE or IMAGE source per scene: combine them into one image")
    _check_light(cfg, flat)
    main_lens = tuple(names["lens"])
    subhalos = None
    if cfg.substructure is not None:
        # Its own stream (fold_in), so configs without subhalos draw exactly as before.
        subhalos = _draw_subhalos(cfg, jax.random.fold_in(key, 6), flat, n)
        names["lens"].append(SUBHALOS)

    scene = Scene(
        lens=tuple(names["lens"]),
        source=tuple(names["source"]),
        lens_light=tuple(names["lens_light"]),
        shape=(ins.npix, ins.npix),
        pixel_scale=ins.pixel_scale,
        supersample=ins.supersample,
        convolution=psfs.convolution,
    )
    # Validate every drawn lens: bad draws (θ_E ≤ 0, |e| ≥ 1) name the parameter.
    for i in range(n):
        lens_i = [
            {k.split(".", 2)[2]: float(v[i]) for k, v in flat.items() if k.startswith(f"lens.{c}.")}
            for c in range(len(main_lens))
        ]
        validate_lens(main_lens, lens_i)

    batched: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    stamps = interpol = None
    for group in GROUPS:
        for ci, comp in enumerate(getattr(cfg, group)):
            prefix = f"{group}.{ci}."
            p = {k[len(prefix) :]: jnp.asarray(v) for k, v in flat.items() if k.startswith(prefix)}
            if comp.type == "VAE":
                stamps = jax.vmap(source_model.decode)(jnp.asarray(latents, dtype=jnp.float32))
                total = stamps.sum(axis=(1, 2))
                if np.any(np.asarray(total) <= 0):
                    raise LensgenError("the decoded source has no positive flux; check the model")
                p = jax.vmap(interpol_params)(stamps, **p)
                interpol = {k: np.asarray(v) for k, v in p.items()}
            if comp.type == "IMAGE":
                p = image_interpol(comp, p)
                interpol = {k: np.asarray(v) for k, v in p.items()}
            batched[group].append(p)
    if subhalos is not None:
        batched["lens"].append({k: jnp.asarray(subhalos[k]) for k in SUBHALO_PARAMS})

    render = make_renderer(scene, None if psfs.kernel is None else jnp.asarray(psfs.kernel))
    exptime = cfg.noise.exptime or None
    keys = jax.random.split(k_noise, n)

    def observe(params, keys):
        models = jax.vmap(render)(params)
        images = jax.vmap(
            lambda k, m: instrument.add_noise(k, m, exptime, cfg.noise.background_rms)
        )(keys, models)
        noise = jax.vmap(lambda m: instrument.noise_map(m, exptime, cfg.noise.background_rms))(
            models
        )
        return models, images, noise

    # The lenses are split over the local devices (one device: a plain call).
    models, images, noise = map_sharded(observe, batched, keys)
    label = "vae" if source_model is not None else "parametric"
    return Batch(
        np.asarray(images),
        np.asarray(models),
        np.asarray(noise),
        flat,
        latents,
        None if stamps is None else np.asarray(stamps),
        interpol,
        psfs.psf,
        scene,
        label,
        subhalos,
        cfg,
        psfs.supersampled,
    )


def _single_params(batch: Batch, i: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for group, names in (
        ("lens", batch.scene.lens),
        ("source", batch.scene.source),
        ("lens_light", batch.scene.lens_light),
    ):
        out[group] = []
        for ci in range(len(names)):
            prefix = f"{group}.{ci}."
            if names[ci] == "INTERPOL":
                out[group].append({k: v[i] for k, v in batch.interpol.items()})
                continue
            out[group].append(
                {
                    k[len(prefix) :]: float(v[i]) if np.ndim(v[i]) == 0 else np.asarray(v[i])
                    for k, v in batch.params.items()
                    if k.startswith(prefix)
                }
            )
            if names[ci] == SUBHALOS:
                out[group][ci] = {k: batch.subhalos[k][i] for k in SUBHALO_PARAMS}
    return out


def simulate_observation(cfg: SimulateConfig, key: jax.Array) -> tuple[Observation, dict]:
    """One lens. Returns the observation and the render parameters (for plots)."""
    return observation(simulate_batch(cfg, key, 1), 0)


def observation(batch: Batch, i: int) -> tuple[Observation, dict]:
    """Lens ``i`` of a batch as an :class:`Observation`, with its render parameters."""
    cfg = batch.config
    params = _single_params(batch, i)
    # The source plane is shown 4x zoomed: sources and caustics are small next to the ring.
    src_scale = batch.scene.pixel_scale / SOURCE_ZOOM
    source = render_source_plane(batch.scene, params, batch.scene.shape, src_scale)
    extra = {"LATENT": batch.latents[i].astype(np.float32)} if batch.latents is not None else {}
    tables = {}
    if batch.subhalos is not None:
        one = {k: v[i] for k, v in batch.subhalos.items()}
        tables[SUBHALOS] = subhalo_table(one, cfg.substructure)
    obs = Observation(
        image=batch.images[i],
        pixel_scale=batch.scene.pixel_scale,
        psf=batch.psf,
        noise_map=batch.noise_maps[i],
        exptime=cfg.noise.exptime or None,
        background_rms=cfg.noise.background_rms,
        supersample=batch.scene.supersample,
        convolution=batch.scene.convolution,
        psf_supersampled=batch.psf_supersampled,
        model=batch.models[i],
        source=np.asarray(source),
        source_pixel_scale=src_scale,
        # Vector parameters (shapelet amplitudes) are in the resolved config, not the cards.
        truth={k: float(v[i]) for k, v in batch.params.items() if np.ndim(v[i]) == 0},
        scene=_scene_names(batch),
        extra=extra,
        tables=tables,
    )
    return obs, params


def _scene_names(batch: Batch) -> dict[str, list[str]]:
    """The component names of each group, as an observation file's SCENE cards hold them."""
    return {g: list(getattr(batch.scene, g)) for g in ("lens", "source", "lens_light")}


def drawn_config(batch: Batch, i: int, seed: int) -> SimulateConfig:
    """The config of lens ``i`` with every distribution replaced by the value drawn.

    With the same seed it renders the same image bit for bit: drawn numbers are
    written exactly and the learned source's latent vector is recorded as ``z``.
    """
    cfg = batch.config
    groups = {}
    for group in GROUPS:
        comps = []
        for ci, comp in enumerate(getattr(cfg, group)):
            prefix = f"{group}.{ci}."
            params = {
                k[len(prefix) :]: float(v[i]) if np.ndim(v[i]) == 0 else [float(x) for x in v[i]]
                for k, v in batch.params.items()
                if k.startswith(prefix)
            }
            if comp.type == "VAE":
                params["z"] = [float(v) for v in batch.latents[i]]
            if comp.type == "IMAGE":
                params.update(
                    {k: comp.params[k] for k in ("file", "pixel_scale") if k in comp.params}
                )
            comps.append(Component(comp.type, params))
        groups[group] = tuple(comps)
    return replace(cfg, **groups, seed=seed)


FITS_SUFFIXES = (".fits", ".fit", ".fts")


def output_paths(out: str | Path, preview: bool) -> list[Path]:
    """``out`` (FITS) and its sidecars ``.toml`` (resolved config) and ``.png`` (preview)."""
    out = Path(out)
    if out.suffix.lower() not in FITS_SUFFIXES:
        raise LensgenError(
            f"--out {out}: simulate writes a FITS file; give a name ending in .fits "
            f"(the resolved config and the preview are written next to it as "
            f"{out.stem}.toml and {out.stem}.png)"
        )
    paths = [out, out.with_suffix(".toml")]
    return [*paths, out.with_suffix(".png")] if preview else paths


def input_files(cfg: SimulateConfig) -> list[Path]:
    """The files a scene reads: source images and the PSF kernel file."""
    files = [Path(c.params["file"]) for c in cfg.source if "file" in c.params]
    if cfg.instrument.psf_file:
        files.append(Path(cfg.instrument.psf_file))
    return files


def run_simulate(
    cfg: SimulateConfig,
    out: str | Path,
    seed: int | None = None,
    n: int | None = None,
    overwrite: bool = False,
    preview: bool = True,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Simulate and write ``out`` (FITS) plus its ``.toml`` resolved config and ``.png`` preview.

    With ``n`` set, writes a cube of ``n`` lenses and a parameter table instead (and
    no preview). Every output path is checked before anything is computed, and the
    files appear together or not at all; none may be one of ``inputs`` (the scene
    file) or of the files the scene reads. ``seed`` (default: the config's, else 0)
    is recorded in the resolved config, which therefore reproduces the file.
    """

    paths = output_paths(out, preview and n is None)
    check_outputs(paths, overwrite)
    refuse_input_outputs(paths, [*inputs, *input_files(cfg)],
                         f" (simulate writes {', '.join(p.name for p in paths)})")  # fmt: skip
    seed = seed if seed is not None else (cfg.seed if cfg.seed is not None else 0)
    key = jax.random.key(seed)
    batch = simulate_batch(cfg, key, 1 if n is None else n)
    check_interrupt()  # Ctrl-C while rendering: stop before anything is written
    header = f"# lensgen {__version__}: the resolved settings of this run; "
    if n is not None:
        text = (
            header
            + f"rerun with --n {n} to remake it\n"
            + dumps_config(replace(batch.config, seed=seed))
        )
        with atomic_outputs(paths, overwrite) as (fits_tmp, toml_tmp):
            write_batch(
                fits_tmp,
                batch.images,
                batch.models,
                batch.psf,
                # Subhalo truths as (n, K) vector columns ("subhalos.mass", ...), zero-padded.
                {**batch.params, **{f"subhalos.{k}": v for k, v in (batch.subhalos or {}).items()}},
                batch.latents,
                pixel_scale=batch.scene.pixel_scale,
                seed=seed,
                cards={
                    "EXPTIME": cfg.noise.exptime,
                    "BKGRMS": cfg.noise.background_rms,
                    "SUPERSMP": batch.scene.supersample,
                    "CONVMODE": batch.scene.convolution,
                    "SRCMODEL": batch.source_label,
                },
                overwrite=True,
                psf_supersampled=batch.psf_supersampled,
                scene=_scene_names(batch),
            )
            toml_tmp.write_text(text, encoding="utf-8")
        return paths[0]
    obs, params = observation(batch, 0)
    obs = replace(obs, seed=seed)
    text = header + "every drawn value is recorded\n" + dumps_config(drawn_config(batch, 0, seed))
    with atomic_outputs(paths, overwrite) as tmps:
        write_observation(tmps[0], obs, overwrite=True)
        tmps[1].write_text(text, encoding="utf-8")
        if preview:
            simulation_preview(obs, params, tmps[2])
    return paths[0]
