"""Observation files: FITS images with WCS, instrument settings and provenance.

Layout (DESIGN.md, "Conventions"):

* primary HDU: observed image (counts/s per pixel, ``BUNIT = 'electron/s'``) with a
  celestial TAN WCS whose reference pixel is the image centre and whose pixel scale
  is ``|CDELT|`` (degrees; ``PIXSCALE`` repeats it in arcsec). lensgen writes
  ``CDELT1 < 0`` (RA grows to the left, as on the sky), and a ``PC`` matrix for any
  other orientation; it reads any celestial WCS with square pixels
  (:mod:`lensgen.io.wcs`): x = −ΔRA·cos(Dec), y = ΔDec. ``EXPTIME`` (s), ``BKGRMS`` (counts/s),
  ``SUPERSMP``, ``CONVMODE`` (where the model applied the PSF: ``'pixel'``, after
  binning the sub-pixels, or ``'subpixel'``, before; a file without the card is
  ``'pixel'``); for simulations ``SEED``, ``LGVERS`` and truths as
  ``HIERARCH TRUTH <group>.<index>.<name>`` plus the component names as
  ``HIERARCH SCENE <group>.<index>``.
* extensions ``PSF`` (unit-sum kernel), ``PSFSUPER`` (the unit-sum kernel sampled at
  PIXSCALE / SUPERSMP, odd sides, that ``'subpixel'`` convolution uses; its own
  ``PIXSCALE`` and ``SUPERSMP`` cards), ``NOISE`` (σ per pixel, counts/s) and, for
  simulations, ``MODEL`` (noiseless image) and ``SOURCE`` (the unlensed source on a
  source-plane grid; its ``PIXSCALE`` gives that grid's scale).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from lensgen import __version__
from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_path
from lensgen.io.wcs import IDENTITY, Orientation, card_number, celestial_wcs, frame_from_header

_GROUPS = ("lens", "source", "lens_light")
CONVOLUTIONS = ("pixel", "subpixel")
"""Values of the CONVMODE card (``lensgen.lensing.psf_supersampling.CONVOLUTIONS``)."""


@dataclass(frozen=True)
class Observation:
    """An observed (or simulated) lens image with everything a likelihood needs.

    Attributes
    ----------
    image : (ny, nx) counts/s per pixel.
    pixel_scale : arcsec per pixel.
    psf : unit-sum PSF kernel or None.
    noise_map : (ny, nx) σ per pixel in counts/s, or None.
    exptime : exposure time in seconds, or None.
    background_rms : Gaussian background σ in counts/s, or None.
    supersample : supersampling factor used to render it (1 for real data).
    convolution : ``"pixel"`` or ``"subpixel"``: the PSF applied to the binned pixels
        (kernel ``psf``) or to the sub-pixels before binning (kernel
        ``psf_supersampled``); see :mod:`lensgen.lensing.psf_supersampling`.
    psf_supersampled : unit-sum PSF kernel sampled at pixel_scale / supersample, or None.
    model, source : noiseless image and true source (simulations only).
    source_pixel_scale : arcsec per pixel of ``source``.
    truth : flat truth parameters ``{"lens.0.theta_E": 2.3, ...}``.
    scene : component names ``{"lens": ["SIS"], "source": [...], "lens_light": []}``.
    extra : further image extensions by name (for example ``LATENT``).
    orientation : (x, y) per unit step along (columns, rows), from the WCS
        (:mod:`lensgen.io.wcs`); the identity for north up, east left.
    """

    image: np.ndarray
    pixel_scale: float
    psf: np.ndarray | None = None
    noise_map: np.ndarray | None = None
    exptime: float | None = None
    background_rms: float | None = None
    supersample: int = 1
    convolution: str = "pixel"
    psf_supersampled: np.ndarray | None = None
    model: np.ndarray | None = None
    source: np.ndarray | None = None
    source_pixel_scale: float | None = None
    truth: dict[str, float] = field(default_factory=dict)
    scene: dict[str, list[str]] | None = None
    seed: int | None = None
    header: fits.Header | None = None
    path: Path | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    orientation: Orientation = IDENTITY

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]


def _image_hdu(data: np.ndarray, name: str, **cards: Any) -> fits.ImageHDU:
    hdu = fits.ImageHDU(
        np.asarray(data, dtype=np.float64 if data.dtype == np.float64 else np.float32), name=name
    )
    for k, v in cards.items():
        hdu.header[k] = v
    return hdu


def write_observation(
    path: str | Path, obs: Observation, overwrite: bool = False, ra: float = 0.0, dec: float = 0.0
) -> Path:
    """Write ``obs`` to ``path`` atomically (see the module docstring for the layout)."""
    header = celestial_wcs(obs.shape, obs.pixel_scale, ra, dec, obs.orientation).to_header()
    header["BUNIT"] = ("electron/s", "counts per second per pixel")
    header["PIXSCALE"] = (float(obs.pixel_scale), "arcsec / pixel")
    if obs.exptime is not None:
        header["EXPTIME"] = (float(obs.exptime), "exposure time [s]")
    if obs.background_rms is not None:
        header["BKGRMS"] = (float(obs.background_rms), "Gaussian background rms [counts/s]")
    header["SUPERSMP"] = (int(obs.supersample), "supersampling factor of the model")
    header["CONVMODE"] = (obs.convolution, "PSF applied to pixel or subpixel grid")
    header["NOISE"] = (_noise_label(obs), "noise model")
    if obs.seed is not None:
        header["SEED"] = (int(obs.seed), "random seed of the simulation")
    header["LGVERS"] = (__version__, "lensgen version")
    _scene_cards(header, obs.scene)
    for key, value in obs.truth.items():
        header[f"HIERARCH TRUTH {key}"] = float(value)
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [
        fits.PrimaryHDU(np.asarray(obs.image, dtype=np.float32), header=header)
    ]
    if obs.psf is not None:
        hdus.append(_image_hdu(obs.psf, "PSF", PIXSCALE=float(obs.pixel_scale)))
    if obs.psf_supersampled is not None:
        hdus.append(_psf_super_hdu(obs.psf_supersampled, obs.pixel_scale, obs.supersample))
    if obs.noise_map is not None:
        hdus.append(_image_hdu(obs.noise_map, "NOISE", BUNIT="electron/s"))
    if obs.model is not None:
        hdus.append(_image_hdu(obs.model, "MODEL", BUNIT="electron/s"))
    if obs.source is not None:
        scale = obs.source_pixel_scale or obs.pixel_scale
        hdus.append(
            _image_hdu(obs.source, "SOURCE", PIXSCALE=float(scale), BUNIT="electron/s/arcsec2")
        )
    for name, data in obs.extra.items():
        hdus.append(_image_hdu(np.asarray(data), name))
    for name, table in obs.tables.items():
        hdus.append(fits.table_to_hdu(table) if not isinstance(table, fits.BinTableHDU) else table)
        hdus[-1].name = name
    # Recorded so that a file cut exactly at an extension boundary, still valid FITS,
    # is recognised as incomplete when read.
    hdus[0].header["NEXTEND"] = (len(hdus) - 1, "number of extensions written")
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return Path(path)


def _scene_cards(header: fits.Header, scene: dict[str, list[str]] | None) -> None:
    """``HIERARCH SCENE <group>.<index>`` cards naming the model's components."""
    for group, names in (scene or {}).items():
        for i, name in enumerate(names):
            header[f"HIERARCH SCENE {group}.{i}"] = name


def _psf_super_hdu(kernel: np.ndarray, pixel_scale: float, supersample: int) -> fits.ImageHDU:
    return _image_hdu(
        kernel,
        "PSFSUPER",
        PIXSCALE=(float(pixel_scale) / int(supersample), "arcsec / sub-pixel"),
        SUPERSMP=(int(supersample), "sub-pixels per pixel along each axis"),
    )


def _noise_label(obs: Observation) -> str:
    parts = []
    if obs.exptime is not None:
        parts.append("poisson")
    if obs.background_rms:
        parts.append("gaussian")
    return "+".join(parts) if parts else "none"


def _card(header: fits.Header, key: str, path: Path, default: Any = None) -> float | None:
    """The number in header card ``key`` (``default`` when absent); one line naming a bad card."""
    return card_number(header, key, path) if key in header else default


def _int_card(header: fits.Header, key: str, path: Path, default: int | None = None) -> int | None:
    value = _card(header, key, path)
    if value is None:
        return default
    if value != int(value):
        raise LensgenError(f"{path}: header card {key} = {header[key]!r} is not an integer")
    return int(value)


def _scene_and_truth(
    header: fits.Header, path: Path
) -> tuple[dict[str, list[str]] | None, dict[str, float]]:
    """Component names from the ``SCENE <group>.<index>`` cards and ``TRUTH <name>`` values."""
    truth: dict[str, float] = {}
    found: dict[str, dict[int, str]] = {}
    for key, value in header.items():
        if key.startswith("TRUTH "):
            truth[key[6:]] = _card(header, key, path)  # type: ignore[assignment]
        elif key.startswith("SCENE "):
            group, _, index = key[6:].rpartition(".")
            if group not in _GROUPS or not index.isdigit():
                raise LensgenError(
                    f"{path}: header card '{key}' is malformed; expected 'SCENE <group>.<index>' "
                    f"with group {', '.join(_GROUPS)} and index 0, 1, ..."
                )
            if not isinstance(value, str) or not value.strip():
                raise LensgenError(
                    f"{path}: header card '{key}' = {value!r} must name a model, e.g. 'SIS'"
                )
            found.setdefault(group, {})[int(index)] = value.strip()
    for group, by_index in found.items():
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            raise LensgenError(
                f"{path}: header card 'SCENE {group}.{missing[0]}' is missing "
                f"(the SCENE {group} cards must be numbered 0, 1, ...)"
            )
    if not found:
        return None, truth
    scene = {g: [found.get(g, {})[i] for i in range(len(found.get(g, {})))] for g in _GROUPS}
    return scene, truth


def _open(path: Path) -> fits.HDUList:
    """Open ``path`` and load every HDU; a truncated or corrupt file is one line naming it."""
    hdul = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # read now: a data section cut short fails here, not later
            error = None
        except (OSError, ValueError, TypeError, IndexError, KeyError, fits.VerifyError) as exc:
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    damaged = _damage(caught)
    if damaged or error:
        if hdul is not None:
            hdul.close()
        if damaged:
            raise LensgenError(f"{path}: the FITS file is truncated or corrupt: {damaged}")
        raise LensgenError(f"{path}: not a readable FITS file: {error}")
    for w in caught:  # anything else astropy had to say still reaches the user
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert hdul is not None
    return hdul


def _damage(caught: list[warnings.WarningMessage]) -> str:
    """What astropy's warnings say about a truncated or corrupt file ('' if nothing)."""
    for w in caught:
        text = str(w.message)
        size = re.search(r"actual file length \((\d+)\).*expected size \((\d+)\)", text)
        if size:
            return f"{size.group(1)} bytes long where its headers announce {size.group(2)}"
        hdu = re.search(r"HDU #(\d+)", text)
        if hdu and ("corrupt" in text or "truncated" in text):
            return f"it ends inside HDU #{hdu.group(1)} (0 = primary)"
        if "truncated" in text or "corrupt" in text:
            return text.splitlines()[0]
    return ""


def read_observation(path: str | Path) -> Observation:
    """Read an observation file; errors name the file and the missing or bad keyword."""
    return _read(Path(path), cube=False)[0]


def read_observations(path: str | Path) -> list[Observation]:
    """The lenses of an observation file: one for a 2-D image, one per slice of a cube
    written by ``lensgen simulate --n`` (:func:`write_batch`; truths from its ``PARAMS``
    table, noiseless images from ``MODEL``)."""
    return _read(Path(path), cube=True)


def _read(path: Path, cube: bool) -> list[Observation]:
    """The observations of a file (several only for a cube when ``cube``)."""
    if not path.is_file():
        raise LensgenError(f"observation file not found: {path}")
    hdul = _open(path)
    with hdul:
        primary = hdul[0]
        written = primary.header.get("NEXTEND")
        if isinstance(written, int) and not isinstance(written, bool) and len(hdul) - 1 < written:
            raise LensgenError(
                f"{path}: the FITS file is truncated: {len(hdul) - 1} of the {written} "
                "extensions it was written with are present"
            )
        ndim = None if primary.data is None else primary.data.ndim
        if ndim != 2 and not (cube and ndim == 3):
            what = "a 2-D image or a cube of them" if cube else "a 2-D image"
            raise LensgenError(f"{path}: the primary HDU must hold {what}")
        header = primary.header.copy()
        pixel_scale, orientation = frame_from_header(header, path)
        if not pixel_scale > 0:
            raise LensgenError(f"{path}: pixel scale must be > 0, got {pixel_scale}")
        names = [h.name for h in hdul]

        def ext(name: str) -> np.ndarray | None:
            if name not in names:
                return None
            data = hdul[name].data
            if data is None or not np.issubdtype(np.asarray(data).dtype, np.number):
                raise LensgenError(f"{path}: the {name} extension holds no image")
            return np.asarray(data, dtype=np.float64)

        scene, truth = _scene_and_truth(header, path)
        source_scale = None
        if "SOURCE" in names:
            source_scale = _card(hdul["SOURCE"].header, "PIXSCALE", path, pixel_scale)
        known = {"PRIMARY", "PSF", "PSFSUPER", "NOISE", "MODEL", "SOURCE"}
        extra = {
            h.name: np.asarray(h.data)
            for h in hdul[1:]
            if h.name not in known and isinstance(h, fits.ImageHDU) and h.data is not None
        }
        tables = {h.name: h.copy() for h in hdul[1:] if isinstance(h, fits.BinTableHDU)}
        psf = ext("PSF")
        if psf is not None:
            if psf.ndim != 2 or not np.all(np.isfinite(psf)) or psf.sum() <= 0:
                raise LensgenError(
                    f"{path}: PSF extension must be a finite 2-D kernel with positive sum"
                )
            psf = psf / psf.sum()
        image = np.asarray(primary.data, dtype=np.float64)
        noise_map = ext("NOISE")
        if noise_map is not None and noise_map.shape != image.shape[-2:]:
            raise LensgenError(
                f"{path}: NOISE shape {noise_map.shape} differs from image {image.shape}"
            )
        supersample = _int_card(header, "SUPERSMP", path, 1)
        if supersample is None or supersample < 1:
            raise LensgenError(f"{path}: header card SUPERSMP = {supersample} must be >= 1")
        convolution = header.get("CONVMODE", "pixel")
        if convolution not in CONVOLUTIONS:
            raise LensgenError(
                f"{path}: header card CONVMODE = {convolution!r} must be one of "
                f"{', '.join(map(repr, CONVOLUTIONS))}"
            )
        psf_super = _psf_supersampled(hdul, names, path, supersample)
        if convolution == "subpixel" and psf is not None and psf_super is None:
            raise LensgenError(
                f"{path}: header card CONVMODE = 'subpixel' needs the PSFSUPER extension "
                f"(the PSF kernel sampled at PIXSCALE / SUPERSMP), which is missing"
            )
        base = Observation(
            image=image,
            pixel_scale=pixel_scale,
            psf=psf,
            noise_map=noise_map,
            exptime=_card(header, "EXPTIME", path),
            background_rms=_card(header, "BKGRMS", path),
            supersample=supersample,
            convolution=convolution,
            psf_supersampled=psf_super,
            model=ext("MODEL"),
            source=ext("SOURCE"),
            source_pixel_scale=source_scale,
            truth=truth,
            scene=scene,
            seed=_int_card(header, "SEED", path),
            header=header,
            path=path,
            extra=extra,
            tables=tables,
            orientation=orientation,
        )
        if image.ndim == 2:
            return [base]
        return _slices(base, path)


def _slices(cube: Observation, path: Path) -> list[Observation]:
    """One observation per slice of a cube; its truth is its row of the PARAMS table."""
    n = cube.image.shape[0]
    table = cube.tables.get("PARAMS")
    rows: list[dict[str, float]] = [{} for _ in range(n)]
    if table is not None:
        if len(table.data) != n:
            raise LensgenError(
                f"{path}: the PARAMS table has {len(table.data)} rows for {n} images"
            )
        for name in table.columns.names:
            column = np.asarray(table.data[name])
            if column.ndim == 1 and np.issubdtype(column.dtype, np.number):
                for i in range(n):
                    rows[i][name] = float(column[i])
    models = cube.model if cube.model is not None and cube.model.shape == cube.image.shape else None
    return [
        replace(cube, image=cube.image[i], model=None if models is None else models[i],
                truth={**cube.truth, **rows[i]}, extra={}, tables={})
        for i in range(n)
    ]  # fmt: skip


def _psf_supersampled(hdul, names: list[str], path: Path, supersample: int) -> np.ndarray | None:
    """The PSFSUPER kernel (unit sum), or None; one line naming a bad extension."""
    if "PSFSUPER" not in names:
        return None
    hdu = hdul["PSFSUPER"]
    data = None if hdu.data is None else np.asarray(hdu.data, dtype=np.float64)
    if data is None or data.ndim != 2 or not np.all(np.isfinite(data)) or data.sum() <= 0:
        shape = None if data is None else data.shape
        raise LensgenError(
            f"{path}: PSFSUPER extension (shape {shape}) must be a finite 2-D kernel with "
            "positive sum"
        )
    if data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
        raise LensgenError(
            f"{path}: PSFSUPER extension has even shape {data.shape}; its sides must be odd "
            "so that its centre is a sub-pixel"
        )
    own = _int_card(hdu.header, "SUPERSMP", path, supersample)
    if own != supersample:
        raise LensgenError(
            f"{path}: PSFSUPER extension has SUPERSMP = {own}, the image SUPERSMP = "
            f"{supersample}; the kernel must be sampled on the image's sub-pixels"
        )
    return data / data.sum()


def write_batch(
    path: str | Path,
    images: np.ndarray,
    models: np.ndarray,
    psf: np.ndarray | None,
    params: dict[str, np.ndarray],
    latents: np.ndarray | None,
    pixel_scale: float,
    seed: int,
    cards: dict[str, Any],
    overwrite: bool = False,
    psf_supersampled: np.ndarray | None = None,
    scene: dict[str, list[str]] | None = None,
) -> Path:
    """Write a batch of simulated lenses: an (n, ny, nx) cube and a parameter table.

    Primary HDU: the noisy cube (counts/s per pixel) with the celestial WCS of one
    image (axis 3 is the lens index); ``MODEL``: noiseless cube; ``PSF``; ``PSFSUPER``
    (when given, sampled at ``pixel_scale / cards["SUPERSMP"]``);
    ``PARAMS``: one row per lens, one column per parameter (``lens.0.theta_E``…);
    ``LATENT``: (n, latent_dim) source latents for a learned source. ``scene`` names
    the components as ``SCENE`` cards, as :func:`write_observation` does.
    """
    from astropy.table import Table

    n, ny, nx = images.shape
    header = celestial_wcs((ny, nx), pixel_scale).to_header()
    header["BUNIT"] = ("electron/s", "counts per second per pixel")
    header["PIXSCALE"] = (float(pixel_scale), "arcsec / pixel")
    header["NLENS"] = (n, "number of lenses (axis 3)")
    header["SEED"] = (int(seed), "random seed of the simulation")
    header["LGVERS"] = (__version__, "lensgen version")
    for k, v in cards.items():
        if v is not None:
            header[k] = v
    _scene_cards(header, scene)
    table = Table({k: np.asarray(v) for k, v in params.items()})
    hdus = [
        fits.PrimaryHDU(np.asarray(images, dtype=np.float32), header=header),
        fits.ImageHDU(np.asarray(models, dtype=np.float32), name="MODEL"),
    ]
    if psf is not None:
        hdus.append(_image_hdu(psf, "PSF", PIXSCALE=float(pixel_scale)))
    if psf_supersampled is not None:
        hdus.append(_psf_super_hdu(psf_supersampled, pixel_scale, cards["SUPERSMP"]))
    params_hdu = fits.table_to_hdu(table)
    params_hdu.name = "PARAMS"
    hdus.append(params_hdu)
    if latents is not None:
        hdus.append(fits.ImageHDU(np.asarray(latents, dtype=np.float32), name="LATENT"))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return Path(path)
