"""The instrument: point-spread functions, FFT convolution and noise.

PSF kernels are static settings of an observation, so they are built once with
NumPy (float64, odd size, unit sum) and passed to the JAX renderer as constants.
Convolution and noise are pure JAX functions.

Images are in counts per second per pixel (lenstronomy's convention): the
Poisson term of the noise uses ``image · exptime`` counts.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

from lensgen.errors import LensgenError
from lensgen.io.source_image import read_image
from lensgen.lensing.grid import bin_image

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _check_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise LensgenError(f"PSF {name} must be a finite number > 0, got {value!r}")


def _kernel_size(size: int | None, radius_arcsec: float, pixel_scale: float) -> int:
    if size is None:
        return 2 * math.ceil(radius_arcsec / pixel_scale) + 1
    if int(size) != size or size < 1 or size % 2 == 0:
        raise LensgenError(f"PSF size must be a positive odd integer of pixels, got {size!r}")
    return int(size)


def gaussian_psf(fwhm: float, pixel_scale: float, size: int | None = None) -> np.ndarray:
    """Gaussian PSF integrated over each pixel, odd-sized, unit sum.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, arcsec (σ = fwhm / 2.3548).
    pixel_scale : float
        Pixel size, arcsec.
    size : int, optional
        Odd kernel width in pixels; default covers ±5σ.

    Returns
    -------
    numpy.ndarray, shape (size, size), float64
        The exact pixel integrals of the Gaussian (a product of error-function
        differences), renormalised to unit sum after truncation.
    """
    _check_positive("fwhm", fwhm)
    _check_positive("pixel_scale", pixel_scale)
    sigma = fwhm / FWHM_PER_SIGMA
    n = _kernel_size(size, 5.0 * sigma, pixel_scale)
    edges = (np.arange(n + 1) - n / 2.0) * pixel_scale / (math.sqrt(2.0) * sigma)
    profile = np.diff(erf(edges))
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()


def moffat_psf(fwhm: float, beta: float, pixel_scale: float, size: int | None = None) -> np.ndarray:
    """Moffat PSF I ∝ [1 + (r/α)²]^(−β), α = fwhm / (2 sqrt(2^(1/β) − 1)), unit sum.

    Each pixel is averaged over 9 × 9 sub-pixel samples. The default size covers
    ±5 fwhm (beyond it the Moffat wings are truncated before normalising).

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, arcsec.
    beta : float
        Moffat power index (> 1 for a finite flux).
    pixel_scale : float
        Pixel size, arcsec.
    size : int, optional
        Odd kernel width in pixels.
    """
    _check_positive("fwhm", fwhm)
    _check_positive("pixel_scale", pixel_scale)
    if not (np.isfinite(beta) and beta > 1):
        raise LensgenError(f"Moffat beta must be > 1, got {beta!r}")
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    n = _kernel_size(size, 5.0 * fwhm, pixel_scale)
    sub = 9
    coords = ((np.arange(n * sub) + 0.5) / sub - n / 2.0) * pixel_scale
    xx, yy = np.meshgrid(coords, coords)
    fine = (1.0 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    kernel = fine.reshape(n, sub, n, sub).mean(axis=(1, 3))
    return kernel / kernel.sum()


def read_psf(path: str | Path) -> np.ndarray:
    """Read a kernel from the first FITS HDU holding data; return it with unit sum.

    Checks everything but the kernel's side (see :func:`load_psf` and
    :func:`lensgen.lensing.psf_supersampling.load_supersampled_psf`).

    Raises
    ------
    LensgenError
        If the file is missing or not FITS, holds no 2-D image, non-finite values,
        or a non-positive sum.
    """
    return read_image(path, "PSF file")[0]


def load_psf(path: str | Path) -> np.ndarray:
    """Read a pixel-level PSF kernel (:func:`read_psf`) that has odd sides.

    Raises
    ------
    LensgenError
        As :func:`read_psf`, and for an even side (the centre would be ambiguous).
    """
    data = read_psf(path)
    if data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
        raise LensgenError(
            f"PSF file {path} has even size {data.shape}; the kernel must have odd sides "
            "so that its centre is a pixel"
        )
    return data


def _fast_size(n: int) -> int:
    """Smallest integer ≥ n with prime factors ≤ 11 (fast FFT length).

    Small prime factors are cheap in XLA's FFT; padding further (e.g. to a power
    of two) costs more in data than it saves (measured for 100 × 100 images).
    """
    while True:
        m = n
        for p in (2, 3, 5, 7, 11):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _toeplitz(taps: np.ndarray, n: int) -> np.ndarray:
    """(n, n) matrix T with (T @ v)[i] = Σ_a taps[a] v[i + c − a], c = len(taps) // 2.

    That is a 1-D "same" convolution with zero boundary as a matrix product.
    """
    centre = len(taps) // 2
    a = np.arange(n)[:, None] - np.arange(n)[None, :] + centre
    inside = (a >= 0) & (a < len(taps))
    return np.where(inside, taps[np.clip(a, 0, len(taps) - 1)], 0.0)


# A kernel of numerical rank ≤ this (e.g. a Gaussian, rank 1) is applied as
# Σ_r A_r · image · B_rᵀ with banded matrices: about twice as fast as the FFT for
# ~100-pixel images on a CPU. Images larger than _SEPARABLE_MAX_SIDE use the FFT.
_SEPARABLE_MAX_RANK = 2
_SEPARABLE_MAX_SIDE = 512


class PSFTransfer:
    """A PSF prepared for one image shape (static; built once with NumPy).

    Preparing the kernel outside the traced renderer avoids re-transforming a
    fixed kernel in every call. A kernel of numerical rank ≤ 2 (singular values
    below 1e-12 of the largest dropped) is applied as a sum of separable 1-D
    convolutions written as matrix products; any other kernel through a
    zero-padded real FFT. Both equal ``scipy.signal.fftconvolve(mode="same")``
    to rounding.

    With ``supersample = s > 1`` the kernel is sampled on the sub-pixel grid
    (spacing pixel_scale / s) and :meth:`apply` takes the (…, ny·s, nx·s)
    sub-pixel image, convolves it there and returns the mean over each pixel's
    s × s sub-pixels, (…, ny, nx): lenstronomy's ``supersampling_convolution=True``
    (``SubgridKernelConvolution``) with the whole kernel on the sub-pixel grid. For a
    separable kernel the binning is folded into the matrices, (ny × ny·s) and
    (nx·s × nx), so the sub-pixel convolution costs two thin matrix products. Other
    kernels zero-pad the sub-pixel image for the FFT; in a forward-only program XLA
    on a CPU fuses that padding into the light profiles' arithmetic, unvectorised,
    which makes a 100 × 100 render at s = 4 with a 51 × 51 Moffat kernel about 8×
    the pixel convolution's time (its gradient: 1.0–1.6×; BENCHMARKS.md).
    """

    def __init__(self, kernel, image_shape: tuple[int, int], supersample: int = 1):
        # A traced kernel (e.g. a PSF passed through jax.jit) is transformed with
        # jnp inside the trace; a concrete one once, here, with NumPy in float64.
        traced = isinstance(kernel, jax.core.Tracer)
        kernel = kernel if traced else np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise LensgenError(f"PSF kernel must be 2-D with odd sides, got shape {kernel.shape}")
        self.kernel_shape = tuple(kernel.shape)
        self.image_shape = tuple(image_shape)
        self.supersample = s = int(supersample)
        self.grid_shape = tuple(n * s for n in self.image_shape)
        self.separable = None
        if not traced and max(self.grid_shape) <= _SEPARABLE_MAX_SIDE:
            u, sv, vt = np.linalg.svd(kernel)
            rank = int(np.sum(sv > 1e-12 * sv[0])) if sv[0] > 0 else 0
            if 0 < rank <= _SEPARABLE_MAX_RANK:
                ny, nx = self.image_shape
                self.separable = [
                    (_binned_toeplitz(u[:, r] * sv[r], ny, s), _binned_toeplitz(vt[r], nx, s).T)
                    for r in range(rank)
                ]
                return
        # Zero-padding to ≥ image + kernel − 1 makes the cyclic FFT product a linear
        # convolution.
        self.fft_shape = tuple(
            _fast_size(n + k - 1) for n, k in zip(self.grid_shape, kernel.shape, strict=True)
        )
        fft = jnp.fft.rfft2 if traced else np.fft.rfft2
        self.transfer = fft(kernel, self.fft_shape)

    def apply(self, image):
        """Convolve ``image`` (…, ny·s, nx·s) with the kernel (centred) and bin to (…, ny, nx)."""
        if self.separable is not None:
            out = 0.0
            for rows, cols_t in self.separable:
                rows = jnp.asarray(rows, image.dtype)
                out = out + jnp.matmul(jnp.matmul(rows, image), jnp.asarray(cols_t, image.dtype))
            return out
        ny, nx = self.grid_shape
        ky, kx = self.kernel_shape
        transfer = jnp.asarray(self.transfer, dtype=jnp.result_type(image, jnp.complex64))
        spectrum = jnp.fft.rfft2(image, self.fft_shape) * transfer
        full = jnp.fft.irfft2(spectrum, self.fft_shape)
        oy, ox = (ky - 1) // 2, (kx - 1) // 2
        return bin_image(full[..., oy : oy + ny, ox : ox + nx], self.supersample).astype(
            image.dtype
        )


def _binned_toeplitz(taps: np.ndarray, n: int, supersample: int) -> np.ndarray:
    """(n, n·s) matrix: the 1-D convolution on n·s sub-pixels, then the mean over each
    pixel's s sub-pixels (:func:`_toeplitz` when s = 1)."""
    full = _toeplitz(taps, n * supersample)
    if supersample == 1:
        return full
    return full.reshape(n, supersample, n * supersample).mean(axis=1)


def convolve(image, kernel):
    """Convolve an (…, ny, nx) image with an odd-sized kernel, same shape.

    Uses :class:`PSFTransfer` (banded matrix products for kernels of rank ≤ 2,
    otherwise a real FFT). Matches ``scipy.signal.fftconvolve(image, kernel, mode="same")`` (zero
    boundary, kernel centre on the output pixel). Differentiable in ``image``.
    """
    return PSFTransfer(kernel, jnp.shape(image)[-2:]).apply(image)


def noise_map(model, exptime: float | None, background_rms: float):
    """Per-pixel noise σ = sqrt(background_rms² + max(model, 0)/exptime).

    Parameters
    ----------
    model : array
        Noiseless image, counts/s per pixel.
    exptime : float or None
        Exposure time, s; ``None`` switches the Poisson term off.
    background_rms : float
        Gaussian background noise, counts/s per pixel.
    """
    variance = jnp.zeros_like(model) + background_rms**2
    if exptime is not None:
        variance = variance + jnp.maximum(model, 0.0) / exptime
    return jnp.sqrt(variance)


def add_noise(key, model, exptime: float | None, background_rms: float):
    """Draw a noisy image: Poisson(max(model, 0)·exptime)/exptime + N(0, background_rms²).

    The Poisson draw replaces the non-negative part of the model, so the noisy
    image has mean ``model`` (for model ≥ 0) and variance ``noise_map(...)²``.
    ``exptime=None`` / ``background_rms=0`` switch the respective term off.

    Parameters
    ----------
    key : jax.random key
        Randomness (split internally for the two noise terms).
    model, exptime, background_rms
        As in :func:`noise_map`.
    """
    poisson = exptime is not None
    gauss = not (isinstance(background_rms, int | float) and background_rms == 0)
    # The draws run on the image flattened and zero-padded to a power-of-two length, so
    # one compiled program serves every image size up to it (the Poisson sampler takes
    # ~1 s to compile). JAX's threefry draws are indexed by position, so the first
    # pixels' draws are the ones the unpadded image would get: the noise is unchanged.
    shape = jnp.shape(model)
    size = math.prod(shape)
    padded = jnp.pad(jnp.reshape(model, (-1,)), (0, padded_length(size, 1024) - size))
    noisy = _add_noise(key, padded, exptime if poisson else 1.0, background_rms, poisson, gauss)
    return jnp.reshape(noisy[:size], shape)


def padded_length(size: int, least: int) -> int:
    """The smallest power of two ≥ ``size`` and ≥ ``least``: the length random draws are
    padded to, so that one compiled sampler serves many sizes."""
    return max(least, 1 << max(size - 1, 0).bit_length())


@partial(jax.jit, static_argnums=(4, 5))
def _add_noise(key, model, exptime, background_rms, poisson: bool, gauss: bool):
    # One compiled program per padded length (the Poisson sampler alone is hundreds of
    # operations, which outside jit would each be compiled and dispatched on their own).
    key_poisson, key_gauss = jax.random.split(key)
    noisy = model
    if poisson:
        rate = jnp.maximum(model, 0.0) * exptime
        counts = jax.random.poisson(key_poisson, rate, shape=jnp.shape(model))
        noisy = noisy + counts.astype(model.dtype) / exptime - jnp.maximum(model, 0.0)
    if gauss:
        noisy = noisy + background_rms * jax.random.normal(key_gauss, jnp.shape(model), model.dtype)
    return noisy
