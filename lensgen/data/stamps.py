"""Postage stamps from GREAT3 images: cutting, noise, S/N, PSF, coadds and the split.

All functions are vectorised NumPy over a stack of stamps (N, H, W): a 4800 × 4800
GREAT3 image holds 10,000 of them and is processed in one pass.

S/N follows GREAT3: the optimal matched-filter S/N of the noiseless galaxy image I
in white noise σ, ν = sqrt(Σ I²) / σ. It is estimated from the noisy stamp
d = I + n as

    ν̂² = Σ_{p ∈ M} (d_p² − σ̂²) / σ̂²,

where σ̂ is the noise rms (the workflow pools robust MAD estimates from the
borders of all stamps of an image, since GREAT3 noise has one variance per image)
and M is the set of pixels where a *ring-smoothed* stamp (the sum over a 5 × 5 box
minus the pixel itself) exceeds ``threshold`` times its own noise. Because the
ring kernel has no weight at the centre, whether pixel p is in M does not depend
on n_p, so E[n_p² | p ∈ M] = σ² and the noise term subtracts without bias;
restricting the sum to M (a few hundred pixels instead of all 2304) cuts the
variance of that term, which over the whole stamp is as large as a faint galaxy's
signal. The remaining bias, galaxy light outside M, is below 1 % in ν at S/N 15
for PSF-convolved galaxies (tests/test_stamps.py); the per-stamp scatter is ≈ 10 %
at S/N 15 (optimal: 1/ν ≈ 7 %) against 17 % for sqrt(Σ d² − N σ²) over the stamp.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from lensgen.errors import LensgenError

MAD_TO_SIGMA = 1.4826  # σ / MAD for Gaussian noise
_BLOCK = 1000


def read_galaxy_catalog(path: Path) -> dict[str, np.ndarray]:
    """Read ``galaxy_catalog-SSS.fits`` or ``.txt``: columns ``x``, ``y``, ``id``."""
    path = Path(path)
    try:
        if path.suffix == ".fits":
            with fits.open(path, memmap=False) as hdul:
                table = next((h.data for h in hdul if isinstance(h, fits.BinTableHDU)), None)
                if table is None:
                    raise LensgenError(f"{path}: no table HDU")
                names = {n.lower(): n for n in table.columns.names}
                cols = {k: np.asarray(table[names[k]]) for k in ("x", "y", "id") if k in names}
        else:
            header = _txt_header(path)
            data = np.loadtxt(path, comments="#", ndmin=2)
            if header and data.size and len(header) != data.shape[1]:
                raise ValueError(
                    f"the header names {len(header)} columns ({' '.join(header)}), "
                    f"the rows hold {data.shape[1]}"
                )
            names = {n.lower(): i for i, n in enumerate(header or ["x", "y", "id"])}
            cols = {k: data[:, names[k]] for k in ("x", "y", "id") if k in names}
    except (OSError, ValueError, IndexError) as exc:
        raise LensgenError(f"{path}: cannot read galaxy catalogue: {exc}") from None
    for need in ("x", "y", "id"):
        if need not in cols:
            raise LensgenError(f"{path}: galaxy catalogue lacks column '{need}'")
    return {
        "x": cols["x"].astype(np.float64),
        "y": cols["y"].astype(np.float64),
        "id": cols["id"].astype(np.int64),
    }


def _txt_header(path: Path) -> list[str]:
    """Column names from the ``#`` lines that open a GREAT3 ``.txt`` catalogue.

    GREAT3 writes one ``# name`` line per column; a single ``# x y ID`` line (and
    SExtractor-style ``#   1 x`` lines) are read too. No header: ``x y ID``.
    """
    lines = []
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").split())
    lines = [w for w in lines if w]
    if len(lines) == 1:
        return lines[0]
    return [w[1] if len(w) >= 2 and w[0].isdigit() else w[0] for w in lines]


def read_image(path: Path, stamp_size: int) -> np.ndarray:
    """Read a GREAT3 image (first HDU with data) and check it is a grid of stamps."""
    try:
        with fits.open(path, memmap=False) as hdul:
            data = next((h.data for h in hdul if h.data is not None), None)
    except (OSError, ValueError) as exc:
        raise LensgenError(f"{path}: cannot read FITS image: {exc}") from None
    if data is None or data.ndim != 2:
        raise LensgenError(f"{path}: expected a 2-D image")
    ny, nx = data.shape
    if ny % stamp_size or nx % stamp_size or ny == 0:
        raise LensgenError(
            f"{path}: image of size {nx} × {ny} is not a grid of {stamp_size} × {stamp_size} "
            "stamps (wrong branch, or a damaged file)"
        )
    return np.asarray(data, dtype=np.float32)


def cut_stamps(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, size: int, where: str = "image"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stamps (N, size, size) at catalogue centres; stamp (i, j) = img[j·s:(j+1)·s, i·s:(i+1)·s].

    The grid cell is floor(x / size), so 0- or 1-based centres both work.
    Returns the stamps (a view where possible) and the grid indices i, j.
    """
    ny, nx = image.shape
    i = np.floor(np.asarray(x) / size).astype(np.int64)
    j = np.floor(np.asarray(y) / size).astype(np.int64)
    bad = (i < 0) | (j < 0) | (i >= nx // size) | (j >= ny // size)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise LensgenError(
            f"{where}: catalogue position ({x[k]}, {y[k]}) lies outside the {nx} × {ny} image"
        )
    grid = image.reshape(ny // size, size, nx // size, size).transpose(0, 2, 1, 3)
    return grid[j, i], i, j


def border_sigma(stamps: np.ndarray, width: int) -> np.ndarray:
    """Noise rms per stamp from its border pixels: 1.4826 · median |v − median v|.

    The medians are taken as the upper middle order statistic (one ``partition``
    each, no averaging of the two middle values): identical for odd counts and
    within 1/n of the textbook median otherwise.
    """
    n, w = len(stamps), width
    parts = (stamps[:, :w], stamps[:, -w:], stamps[:, w:-w, :w], stamps[:, w:-w, -w:])
    values = np.concatenate([np.reshape(p, (n, -1)) for p in parts], axis=1, dtype=np.float32)
    mid = values.shape[-1] // 2
    med = np.partition(values, mid, axis=-1)[..., mid : mid + 1]
    dev = np.abs(values - med)
    return MAD_TO_SIGMA * np.partition(dev, mid, axis=-1)[..., mid]


def _box_sum(stamps: np.ndarray, width: int) -> np.ndarray:
    """Sum over a width × width box (odd width) centred on each pixel, zero boundary.

    Two running sums (cumulative sums along each axis) cost O(1) per pixel whatever
    the width.
    """
    r = width // 2
    out = stamps
    for axis in (-1, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(out, pad), axis=axis, dtype=np.float32)
        n = out.shape[axis]
        out = np.take(c, np.arange(width, width + n), axis=axis) - np.take(
            c, np.arange(0, n), axis=axis
        )
    return out


def estimate_snr(
    stamps: np.ndarray, sigma: np.ndarray, box: int = 5, threshold: float = 1.0
) -> np.ndarray:
    """Matched-filter S/N ν = sqrt(Σ I²)/σ estimated from noisy stamps (module docstring).

    Parameters
    ----------
    stamps : (N, H, W) array
        Background-subtracted stamps, flux/pixel.
    sigma : (N,) array
        Noise rms, flux/pixel.
    box : int
        Side of the ring kernel (a box without its centre pixel) that defines the
        signal region, pixels (odd).
    threshold : float
        Region = ring-smoothed stamp above ``threshold`` × its noise rms.

    Returns
    -------
    (N,) array
        ν̂ ≥ 0; NaN where σ is not positive.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    # Ring sum over box² − 1 neighbours: noise rms σ sqrt(box² − 1).
    ring_rms = np.sqrt(box * box - 1.0)
    safe = np.where(sigma > 0, sigma, 1.0)
    nu2 = np.empty(len(sigma))
    # Blocks of stamps stay in cache and bound the temporary memory.
    for start in range(0, len(sigma), _BLOCK):
        block = np.ascontiguousarray(stamps[start : start + _BLOCK], dtype=np.float32)
        sig = safe[start : start + _BLOCK]
        ring = _box_sum(block, box) - block
        cut = (threshold * ring_rms * sig).astype(np.float32)[:, None, None]
        mask = ring > cut
        power = np.einsum("nij,nij->n", np.where(mask, block, 0.0), block, dtype=np.float64)
        nu2[start : start + _BLOCK] = (power - mask.sum(axis=(-2, -1)) * sig**2) / sig**2
    return np.where(sigma > 0, np.sqrt(np.maximum(nu2, 0.0)), np.nan)


def true_snr(noiseless: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """GREAT3's ν = sqrt(Σ I²)/σ of noiseless stamps (N, H, W)."""
    return np.sqrt(np.sum(np.asarray(noiseless, np.float64) ** 2, axis=(-2, -1))) / sigma


def centroid(image: np.ndarray) -> tuple[float, float]:
    """First moment (y, x) of an image, pixels (0-based, pixel centres at integers)."""
    image = np.asarray(image, np.float64)
    total = image.sum()
    if not total > 0:
        raise LensgenError("cannot take the centroid of an image without positive flux")
    yy, xx = np.indices(image.shape)
    return float((yy * image).sum() / total), float((xx * image).sum() / total)


def _phase(shape: tuple[int, int], dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Separable phase ramps (column, row) that move an ``rfft2`` spectrum by (dy, dx)."""
    ny, nx = shape
    col = np.exp(-2j * np.pi * np.fft.fftfreq(ny) * dy)[:, None]
    row = np.exp(-2j * np.pi * np.fft.rfftfreq(nx) * dx)[None, :]
    if nx % 2 == 0:  # the x-Nyquist column must stay Hermitian in y: its x phase is real
        row[0, -1] = np.cos(np.pi * dx)
    return col, row


def shift_image(image: np.ndarray, dy: float, dx: float, pad: int = 0) -> np.ndarray:
    """``image`` moved by (dy, dx) pixels by a Fourier phase ramp (sinc interpolation).

    Exact for a band-limited image and unitary on white noise (the noise stays white
    and keeps its variance). The image is treated as periodic; ``pad`` zero pixels
    on each side keep the wrap-around away from the edges.
    """
    image = np.asarray(image, np.float64)
    if pad:
        image = np.pad(image, pad)
    col, row = _phase(image.shape, dy, dx)
    out = np.fft.irfft2(np.fft.rfft2(image) * col * row, s=image.shape)
    return out[pad : image.shape[0] - pad, pad : image.shape[1] - pad] if pad else out


def centred_psf(star: np.ndarray, box: int, tol: float = 1e-4) -> np.ndarray:
    """An odd ``box`` × ``box`` PSF kernel whose centroid is its centre pixel, unit sum.

    GREAT3 draws the constant-PSF star at the true centre of its stamp, which lies
    between pixels for even stamps (23.5, 23.5 for 48 × 48). The star is moved by
    the sub-pixel offset between its centroid and the nearest pixel centre
    (:func:`shift_image`), cropped around that pixel, and the shift refined until the
    crop's own centroid is at the centre to ``tol`` pixels (the crop drops some
    wing light, which moves the centroid of an asymmetric PSF).
    """
    star = np.asarray(star, np.float64)
    box += 1 - box % 2
    half = box // 2
    size_y, size_x = star.shape
    if box > min(size_y, size_x):
        raise LensgenError(f"a {box} × {box} PSF does not fit the {size_x} × {size_y} star")
    cy, cx = centroid(star)
    py = int(np.clip(np.rint(cy), half, size_y - 1 - half))
    px = int(np.clip(np.rint(cx), half, size_x - 1 - half))
    dy, dx = py - cy, px - cx
    for _ in range(8):
        moved = shift_image(star, dy, dx, pad=half)
        kernel = moved[py - half : py + half + 1, px - half : px + half + 1]
        ky, kx = centroid(kernel)
        if max(abs(ky - half), abs(kx - half)) < tol:
            break
        dy, dx = dy + half - ky, dx + half - kx
    return (kernel / kernel.sum()).astype(np.float32)


def psf_from_starfield(image: np.ndarray, size: int, box: int | None = None) -> np.ndarray:
    """The PSF of a constant-PSF GREAT3 starfield: its lower-left star, centred.

    The lower-left stamp (rows and columns 0…size−1, FITS lower-left) holds the
    star drawn at the stamp's true centre; :func:`centred_psf` resamples it so its
    centroid is the centre pixel of an odd ``box`` (default size/2 + 1).
    """
    if image.ndim != 2 or image.shape[0] < size or image.shape[1] < size:
        raise LensgenError(f"starfield image of shape {image.shape} is smaller than one stamp")
    star = np.asarray(image[:size, :size], dtype=np.float64)
    if not star.sum() > 0:
        raise LensgenError("starfield: the lower-left PSF stamp has no positive flux")
    return centred_psf(star, box or (size // 2 + 1))


def rebin(stamps: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor`` × ``factor`` pixel blocks of (…, H, W) images (flux per pixel kept
    as flux per new pixel); H and W must be multiples of ``factor``."""
    if factor == 1:
        return stamps
    *lead, h, w = stamps.shape
    if h % factor or w % factor:
        raise LensgenError(f"cannot rebin {w} × {h} pixels by {factor}")
    blocks = stamps.reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.sum(axis=(-3, -1), dtype=np.float64).astype(stamps.dtype)


def coadd(images: Iterable[np.ndarray], dithers: Iterable[tuple[float, float]]) -> np.ndarray:
    """Sum of the epochs of a multi-epoch subfield, each moved back by its dither.

    GREAT3 draws epoch e with every galaxy offset by its dither (dx, dy) pixels
    (``epoch_dither-SSS-E.txt``) and a sixth of the flux; its example coadd moves
    each epoch by (−dx, −dy) and adds them. The shift here is a Fourier phase ramp
    (:func:`shift_image`), so each epoch's noise stays white and the coadd's noise
    variance is the sum of the epochs'. The shifted spectra are summed, so one
    inverse transform makes the coadd; ``images`` may be a generator, so that one
    epoch is in memory at a time.
    """
    spectrum = None
    for image, (dx, dy) in zip(images, dithers, strict=True):
        moved = np.fft.rfft2(np.asarray(image, np.float64))
        col, row = _phase(image.shape, -dy, -dx)
        moved *= col
        moved *= row
        if spectrum is None:
            spectrum, shape = moved, image.shape
        elif image.shape != shape:
            raise LensgenError(f"epochs differ in size: {image.shape} and {shape}")
        else:
            spectrum += moved
    return np.fft.irfft2(spectrum, s=shape).astype(np.float32)


def split_by_subfield(
    subfield: np.ndarray, val_fraction: float, seed: int, n_val: int | None = None
) -> np.ndarray:
    """The subfields that go to validation: a leak-free split of GREAT3 stamps.

    A constant-shear subfield holds each galaxy and its 90°-rotated twin at
    positions scattered by a random permutation, so the whole subfield must be on
    one side. Subfields are taken in a ``seed``-ed random order until they hold
    ``n_val`` stamps (default: ``val_fraction`` of all), leaving at least one for
    training.

    Returns
    -------
    (k,) array of the validation subfields' numbers.
    """
    subs, counts = np.unique(np.asarray(subfield), return_counts=True)
    if val_fraction == 0 or n_val == 0:
        return subs[:0]
    if len(subs) < 2:
        raise LensgenError(
            f"a leak-free validation split needs stamps from ≥ 2 subfields (rotated twins "
            f"are scattered over a subfield), got only subfield {subs[0]:03d}"
        )
    target = val_fraction * counts.sum() if n_val is None else n_val
    order = np.random.default_rng(seed).permutation(len(subs))
    filled = np.cumsum(counts[order]) >= target
    k = min(int(np.argmax(filled)) + 1 if filled.any() else len(subs), len(subs) - 1)
    return np.sort(subs[order[:k]])
