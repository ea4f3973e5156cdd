"""A galaxy image in a FITS file used as a source (``[[source]] type = "IMAGE"``).

The image is the source's light on its own pixel grid; its pixel scale comes from the
header (``PIXSCALE`` in arcsec, or a celestial WCS: ``CDELT1``/``CDELT2`` or the
``CD`` matrix, in degrees) or from the ``pixel_scale`` key of the scene file. The
simulation renders it as lenstronomy's ``INTERPOL`` profile
(:func:`lensgen.lensing.light.interpolated`), rescaled to the requested total flux.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lensgen.errors import LensgenError

DEGREE = 3600.0
"""Arcseconds per degree (WCS increments are in degrees)."""


def _header_scale(header, path: Path) -> float | None:
    """Pixel scale (arcsec) from PIXSCALE or the WCS; None when the header has none."""
    if "PIXSCALE" in header:
        return float(header["PIXSCALE"])
    if "CD1_1" in header or "CD2_2" in header:
        cd = np.array([[header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                       [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)]], float)  # fmt: skip
        sides = np.sqrt((cd**2).sum(axis=0)) * DEGREE
    elif "CDELT1" in header and "CDELT2" in header:
        sides = np.abs([float(header["CDELT1"]), float(header["CDELT2"])]) * DEGREE
    else:
        return None
    if not np.isclose(sides[0], sides[1], rtol=1e-6):
        raise LensgenError(
            f"source image {path}: pixels are not square ({sides[0]:g}″ × {sides[1]:g}″); "
            "resample it to square pixels"
        )
    return float(sides[0])


def read_image(path: str | Path, what: str) -> tuple[np.ndarray, object]:
    """The first 2-D image of a FITS file (float64, unit sum) and its header.

    ``what`` names the file in the messages ("PSF file", "source image").

    Raises
    ------
    LensgenError
        If the file is missing or not FITS, holds no 2-D image, non-finite values,
        or a non-positive sum.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise LensgenError(f"{what} {path} does not exist")
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.data is not None), None)
            data = None if hdu is None else np.array(hdu.data, dtype=np.float64)
            header = None if hdu is None else hdu.header
    except (OSError, ValueError, TypeError) as exc:
        raise LensgenError(f"{what} {path} is not a readable FITS file: {exc}") from exc
    if data is None or data.ndim != 2:
        shape = None if data is None else data.shape
        raise LensgenError(f"{what} {path} must hold a 2-D image, found shape {shape}")
    if not np.all(np.isfinite(data)):
        raise LensgenError(f"{what} {path} contains NaN or infinite values")
    total = data.sum()
    if not total > 0:
        raise LensgenError(f"{what} {path} has non-positive sum {total!r}")
    return data / total, header


def read_source_image(
    path: str | Path, pixel_scale: float | None = None
) -> tuple[np.ndarray, float]:
    """The image (float64, unit sum) and its pixel scale (arcsec) of a source FITS file.

    Parameters
    ----------
    path : str or Path
        FITS file; the first HDU holding data is read (a 2-D image).
    pixel_scale : float, optional
        Pixel scale in arcsec, replacing the header's.

    Raises
    ------
    LensgenError
        As :func:`read_image`, or no pixel scale anywhere, or non-square pixels (each
        message names the file).
    """
    path = Path(path)
    image, header = read_image(path, "source image")
    scale = pixel_scale if pixel_scale is not None else _header_scale(header, path)
    if scale is None:
        raise LensgenError(
            f"source image {path} has no pixel scale: add PIXSCALE (arcsec) or a celestial WCS "
            "(CDELT1/CDELT2 or CD1_1…CD2_2, degrees) to its header, or set pixel_scale "
            "(arcsec) in its [[source]] table"
        )
    if not (math.isfinite(scale) and scale > 0):
        raise LensgenError(f"source image {path}: pixel scale must be > 0 arcsec, got {scale:g}")
    return image, float(scale)
