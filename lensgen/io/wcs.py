"""An image's pixel grid on the sky, read from and written to its FITS WCS.

lensgen's coordinates are fixed on the sky (README, "Coordinates"): x = −ΔRA·cos δ
(positive to the west), y = ΔDec (positive to the north), arcsec from the image
centre. An image's *orientation* is the orthonormal 2 × 2 matrix O that turns a step
of one pixel along (columns, rows) into a step in (x, y) in units of the pixel scale:
``(x, y) = pixel_scale · O · (Δcolumn, Δrow)``. O is the identity for the usual
north-up image with east to the left (``CDELT1 < 0``), ``diag(−1, 1)`` for east to the
right (``CDELT1 > 0``), and a rotation, possibly times that flip, for a rotated WCS
(``PC``/``CD`` matrix or ``CROTA2``).

The WCS's linear part (Greisen & Calabretta 2002, eqs. 1–3) maps pixel offsets to
intermediate world coordinates, (ΔRA·cos δ, ΔDec) at the reference point, in degrees;
lensgen's (x, y) is that with the first row negated. Pixels must be square and the
pixel axes perpendicular (to 1 part in 10⁴): the likelihood's PSF and sub-pixel grid
are defined on square pixels.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from lensgen.errors import LensgenError

Orientation = tuple[tuple[float, float], tuple[float, float]]

IDENTITY: Orientation = ((1.0, 0.0), (0.0, 1.0))
"""North up, east left: x along the columns, y along the rows."""

MIRROR_X: Orientation = ((-1.0, 0.0), (0.0, 1.0))
"""East right (``CDELT1 > 0``); also lensgen's (x, y) to lenstronomy's (ra, dec)."""

DEGREE = 3600.0
"""Arcseconds per degree (WCS increments are in degrees)."""

TOLERANCE = 1e-4
"""Relative difference of the pixel sides, and cosine of the angle between the pixel
axes, above which pixels are refused as non-square or skewed."""

_WCS_KEYS = ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1",
             "CDELT2", "CROTA2")  # fmt: skip


def as_orientation(matrix: Any, where: str = "orientation") -> Orientation:
    """``matrix`` as a hashable, checked orientation (orthonormal to 1e-6).

    Entries within 1e-12 of 0 or ±1 are snapped to them, so that rounding in a WCS
    does not make two grids of the same image differ.
    """
    m = np.asarray(matrix, dtype=float)
    if m.shape != (2, 2) or not np.all(np.isfinite(m)):
        raise LensgenError(f"{where} must be a finite 2 × 2 matrix, got {matrix!r}")
    if not np.allclose(m.T @ m, np.eye(2), atol=1e-6):
        raise LensgenError(
            f"{where} {m.tolist()} is not a rotation or reflection (its columns must be "
            "perpendicular unit vectors: square, unskewed pixels)"
        )
    m = np.where(np.abs(m) < 1e-12, 0.0, m)
    m = np.where(np.abs(np.abs(m) - 1.0) < 1e-12, np.sign(m), m)
    return ((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1])))


def is_diagonal(orientation: Orientation) -> bool:
    """True when the pixel axes lie along x and y (no rotation; flips allowed)."""
    return orientation[0][1] == 0.0 and orientation[1][0] == 0.0


def rotation_deg(orientation: Orientation) -> float:
    """Angle (degrees, counter-clockwise from +x) of the column axis in (x, y)."""
    return math.degrees(math.atan2(orientation[1][0], orientation[0][0]))


def has_pixel_scale(header: fits.Header) -> bool:
    """True when the header has a ``PIXSCALE`` card or WCS cards to read a scale from."""
    return "PIXSCALE" in header or any(k in header for k in _WCS_KEYS)


def _celestial_matrix(header: fits.Header, path: Path) -> np.ndarray | None:
    """d(ΔRA·cos δ, ΔDec)/d(column, row) in degrees, or None without a celestial WCS."""
    if not any(k in header for k in _WCS_KEYS):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises many types for a malformed WCS
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LensgenError(f"{path}: cannot read the WCS: {text}") from None
    if not w.has_celestial or w.celestial.naxis != 2:
        return None
    m = np.asarray(w.celestial.pixel_scale_matrix, dtype=float)
    if w.celestial.wcs.lng == 1:  # latitude axis first: rows to (RA, Dec)
        m = m[::-1]
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) == 0:
        raise LensgenError(f"{path}: the WCS's pixel matrix {m.tolist()} is singular")
    return m


def frame_from_header(header: fits.Header, path: Path) -> tuple[float, Orientation]:
    """Pixel scale (arcsec) and orientation of an image from its primary header.

    A celestial WCS (``CDELT`` with ``PC`` or ``CROTA2``, or ``CD``) gives both; the
    ``PIXSCALE`` card (arcsec), when present, gives the scale. Without a celestial
    WCS the pixel axes are taken as north-up, east-left, with the scale from
    ``PIXSCALE`` or ``|CDELT|`` (degrees). Non-square or skewed pixels are refused.
    """
    m = _celestial_matrix(header, path)
    if m is None:
        return _plain_scale(header, path), IDENTITY
    xy = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ m * DEGREE
    sides = np.hypot(xy[0], xy[1])
    if not math.isclose(sides[0], sides[1], rel_tol=TOLERANCE):
        raise LensgenError(
            f"{path}: non-square pixels ({sides[0]:.6g}″ along the columns, {sides[1]:.6g}″ "
            "along the rows, from the WCS) cannot be modelled; resample to square pixels"
        )
    cosine = float(xy[:, 0] @ xy[:, 1] / (sides[0] * sides[1]))
    if abs(cosine) > TOLERANCE:
        raise LensgenError(
            f"{path}: the WCS's pixel axes are {math.degrees(math.acos(cosine)):.4f}° apart, "
            "not 90°; skewed pixels cannot be modelled"
        )
    u, _, vt = np.linalg.svd(xy)  # nearest orthonormal matrix (polar decomposition)
    scale = card_number(header, "PIXSCALE", path) if "PIXSCALE" in header else float(np.sqrt(
        abs(np.linalg.det(xy))))  # fmt: skip
    return scale, as_orientation(u @ vt, f"{path}: WCS orientation")


def card_number(header: fits.Header, key: str, path: Path) -> float:
    """The number in header card ``key``; one line naming the file and a bad card."""
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LensgenError(f"{path}: header card {key} = {value!r} is not a number")
    if not math.isfinite(float(value)):
        raise LensgenError(f"{path}: header card {key} = {value!r} is not a finite number")
    return float(value)


def _plain_scale(header: fits.Header, path: Path) -> float:
    if "PIXSCALE" in header:
        return card_number(header, "PIXSCALE", path)
    if "CDELT1" in header and "CDELT2" in header:
        sx, sy = (abs(card_number(header, k, path)) for k in ("CDELT1", "CDELT2"))
        if not math.isclose(sx, sy, rel_tol=TOLERANCE):
            raise LensgenError(
                f"{path}: non-square pixels (CDELT1={sx}, CDELT2={sy}) cannot be modelled"
            )
        return sx * DEGREE
    raise LensgenError(
        f"{path}: no pixel scale in the primary header; add PIXSCALE (arcsec/pixel) or a "
        "celestial WCS (CDELT1/CDELT2), e.g. with astropy.io.fits.setval"
    )


def celestial_wcs(
    shape: tuple[int, int],
    pixel_scale: float,
    ra: float = 0.0,
    dec: float = 0.0,
    orientation: Orientation = IDENTITY,
) -> WCS:
    """TAN WCS with the reference pixel at the image centre (1-based FITS pixels).

    ``CDELT = (−s, s)`` and, for an orientation other than the identity, ``PC = O``,
    so that :func:`frame_from_header` reads back ``orientation``.
    """
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.crval = [ra, dec]
    w.wcs.cdelt = [-pixel_scale / DEGREE, pixel_scale / DEGREE]
    if orientation != IDENTITY:
        w.wcs.pc = np.asarray(orientation, dtype=float)
    return w
