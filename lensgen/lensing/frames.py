"""Sky frames: lensgen's (x, y), the pixel axes of an image, and mirrored frames.

lensgen's coordinates are fixed on the sky: x = −ΔRA·cos δ (positive to the west),
y = ΔDec (positive to the north), arcsec from the image centre; angles (the
ellipticity and shear angles φ = atan2(e2, e1)/2) run from +x towards +y. On a
north-up image with east to the left (``CDELT1 < 0``, the usual way) x runs along
the columns and y along the rows, so this is also COOLEST's frame ("x to the
right, y up"). lenstronomy's ``ra`` grows to the east, so a model moves between
lensgen and lenstronomy through :func:`mirror_x`.

An observation's *orientation* is the orthonormal 2 × 2 matrix O that turns a step
of one pixel along (columns, rows) into a step in (x, y), in units of the pixel
scale: ``(x, y) = pixel_scale · O · (Δcolumn, Δrow)``. It is the identity for a
north-up, east-left image, ``diag(−1, 1)`` for east to the right (``CDELT1 > 0``),
and a rotation (possibly with that flip) for a rotated WCS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lensgen.io.wcs import IDENTITY, MIRROR_X, Orientation, as_orientation, is_diagonal
from lensgen.lensing.shapelets import shapelet_indices, shapelet_order

__all__ = [
    "IDENTITY",
    "MIRROR_X",
    "Orientation",
    "as_orientation",
    "is_diagonal",
    "mirror_model",
    "mirror_x",
]

_NEGATED = ("center_x", "ra_0", "e2", "gamma2", "phi_G")
"""Parameters that change sign under x → −x (lenstronomy's names)."""


def mirror_x(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of profile ``name`` seen in the frame x → −x (y unchanged).

    Positions change sign in x, ellipticity and shear components ``e2``/``gamma2``
    (φ → −φ) and the INTERPOL angle ``phi_G`` change sign, an INTERPOL image is
    reversed along its columns, and a shapelet amplitude changes sign when its n1 is
    odd (φ_n(−x) = (−1)^n φ_n(x)). The map is its own inverse. Works on floats and
    arrays alike.
    """
    out = dict(kwargs)
    for key in _NEGATED:
        if key in out:
            value = out[key]
            out[key] = -np.asarray(value) if isinstance(value, list | tuple) else -value
    if name == "INTERPOL" and "image" in out:
        out["image"] = np.asarray(out["image"])[..., ::-1]
    if name == "SHAPELETS" and "amp" in out:
        amp = np.asarray(out["amp"])
        n1 = shapelet_indices(shapelet_order(amp.shape[-1]))[:, 0]
        out["amp"] = amp * np.where(n1 % 2 == 1, -1.0, 1.0)
    return out


def mirror_model(names: tuple[str, ...] | list[str], components: list) -> list[dict[str, Any]]:
    """:func:`mirror_x` of every component of a model."""
    return [mirror_x(n, c) for n, c in zip(names, components, strict=True)]
