"""A galaxy image in a FITS file used as a source (``[[source]] type = "IMAGE"``).

The image is the source's light on its own pixel grid; its pixel scale comes from the
header (``PIXSCALE`` in arcsec, or a celestial WCS: ``CDELT1``/``CDELT2`` or the
``CD`` matrix, in degrees) or from the ``pixel_scale`` key of the scene file, and its
orientation on the sky from the WCS (:mod:`lensgen.io.wcs`). The
simulation renders it as lenstronomy's ``INTERPOL`` profile
(:func:`lensgen.lensing.light.interpolated`), rescaled to the requested total flux.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lensgen.errors import LensgenError
from lensgen.io.wcs import IDENTITY, MIRROR_X, frame_from_header, has_pixel_scale, rotation_deg


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
) -> tuple[np.ndarray, float, float]:
    """The image (float64, unit sum), pixel scale (arcsec) and angle of a source FITS file.

    The image is returned with its columns along +x when its WCS has east to the right
    (reversed), and the angle (radians, counter-clockwise from +x) of its column axis
    for a rotated WCS, which is INTERPOL's ``phi_G``
    (:func:`lensgen.lensing.light.interpolated`). Without a celestial WCS the image is
    taken as north up, east left (angle 0).

    Parameters
    ----------
    path : str or Path
        FITS file; the first HDU holding data is read (a 2-D image).
    pixel_scale : float, optional
        Pixel scale in arcsec, replacing the header's.

    Raises
    ------
    LensgenError
        As :func:`read_image`, or no pixel scale anywhere, or non-square or skewed
        pixels (each message names the file).
    """
    path = Path(path)
    image, header = read_image(path, "source image")
    scale, orientation = None, IDENTITY
    if has_pixel_scale(header):
        scale, orientation = frame_from_header(header, f"source image {path}")
    if pixel_scale is not None:
        scale = pixel_scale
    if scale is None:
        raise LensgenError(
            f"source image {path} has no pixel scale: add PIXSCALE (arcsec) or a celestial WCS "
            "(CDELT1/CDELT2 or CD1_1…CD2_2, degrees) to its header, or set pixel_scale "
            "(arcsec) in its [[source]] table"
        )
    if not (math.isfinite(scale) and scale > 0):
        raise LensgenError(f"source image {path}: pixel scale must be > 0 arcsec, got {scale:g}")
    if np.linalg.det(orientation) < 0:  # east right: reverse the columns, then a rotation
        image = image[:, ::-1]
        orientation = tuple(map(tuple, np.asarray(orientation) @ np.asarray(MIRROR_X)))
    return image, float(scale), math.radians(rotation_deg(orientation))
