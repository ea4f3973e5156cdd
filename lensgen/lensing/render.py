"""The image renderer: ray-shoot sub-pixels, evaluate light, convolve with the PSF, bin.

For an image of pixel size Δ and supersampling s, with ``Scene.convolution``

    "pixel":     image = K_Δ ⊛ [ Δ² · mean_{s×s}( I ) ],
    "subpixel":  image = Δ² · mean_{s×s}( K_{Δ/s} ⊛ I ),     I = I_src(β(θ)) + I_lens(θ),

where θ are the sub-pixel centres, β = θ − α(θ) the lens equation
(:func:`lensgen.lensing.raytrace.ray_shoot`), I_src and I_lens the source and
lens-light surface brightness (flux/arcsec²), ⊛ a convolution with zero boundary,
and K_Δ, K_{Δ/s} the PSF integrated over pixels and over sub-pixels. These are
lenstronomy's ``ImageModel`` with ``supersampling_convolution=False`` and ``True``
(:mod:`lensgen.lensing.psf_supersampling` says when the second matters); the
result is flux per pixel.

Everything here is a pure function of a parameter pytree, so it can be jitted,
vmapped over batches of parameters and differentiated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp

from lensgen.errors import LensgenError
from lensgen.lensing.frames import IDENTITY, Orientation, as_orientation
from lensgen.lensing.grid import bin_image, check_grid, pixel_grid
from lensgen.lensing.instrument import PSFTransfer
from lensgen.lensing.light import LIGHT_PROFILES, surface_brightness
from lensgen.lensing.pixelgrid import grid_basis
from lensgen.lensing.psf_supersampling import CONVOLUTIONS
from lensgen.lensing.raytrace import ray_shoot
from lensgen.lensing.shapelets import shapelet_basis


@dataclass(frozen=True, kw_only=True)
class Scene:
    """Static description of what is rendered (hashable; static under ``jax.jit``).

    Construct with keywords: ``Scene(lens=("SIE",), source=("SERSIC",), shape=(64, 64),
    pixel_scale=0.05)``.

    Attributes
    ----------
    lens : tuple of str
        Mass profile names, e.g. ``("SIE", "SHEAR")``.
    source : tuple of str
        Source light profile names, e.g. ``("SERSIC_ELLIPSE",)``.
    lens_light : tuple of str
        Lens-galaxy light profile names (unlensed), default none.
    shape : (ny, nx)
        Image size in pixels.
    pixel_scale : float
        Pixel size, arcsec.
    supersample : int
        Sub-pixels per pixel along each axis.
    convolution : {"pixel", "subpixel"}
        Where the PSF is applied: on the binned pixels with a pixel-level kernel
        (default), or on the sub-pixels before binning with a kernel sampled at
        pixel_scale / supersample (:mod:`lensgen.lensing.psf_supersampling`).
    orientation : 2 × 2 tuple
        (x, y) per unit step along the image's (columns, rows), from its WCS
        (:mod:`lensgen.lensing.frames`); the identity for north up, east left.
    """

    lens: tuple[str, ...]
    source: tuple[str, ...]
    lens_light: tuple[str, ...] = ()
    shape: tuple[int, int]
    pixel_scale: float
    supersample: int = 1
    convolution: str = "pixel"
    orientation: Orientation = IDENTITY

    def __post_init__(self):
        # Lists would make the scene unhashable; accept them and store tuples.
        for name in ("lens", "source", "lens_light", "shape"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        check_grid(self.shape, self.pixel_scale, self.supersample)
        object.__setattr__(self, "supersample", int(self.supersample))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "orientation", as_orientation(self.orientation))
        if self.convolution not in CONVOLUTIONS:
            raise LensgenError(
                f"convolution must be one of {', '.join(CONVOLUTIONS)}, got {self.convolution!r}"
            )
        for name in self.source + self.lens_light:
            if name not in LIGHT_PROFILES:
                raise LensgenError(
                    f"unknown light profile {name!r}; choose from {sorted(LIGHT_PROFILES)}"
                )


def _param_dtype(params) -> jnp.dtype:
    """Floating dtype of the parameters (float32 parameters keep the render in float32)."""
    leaves = jax.tree_util.tree_leaves(params)
    dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def subpixel_surface_brightness(scene: Scene, params) -> jax.Array:
    """Lensed source + lens light surface brightness on the sub-pixel grid (ny·s, nx·s)."""
    dtype = _param_dtype(params)
    grid = pixel_grid(scene.shape, scene.pixel_scale, scene.supersample, scene.orientation)
    x, y = (jnp.asarray(c, dtype) for c in grid)
    beta_x, beta_y = ray_shoot(scene.lens, params["lens"], x, y)
    sb = surface_brightness(scene.source, params["source"], beta_x, beta_y)
    if scene.lens_light:
        sb = sb + surface_brightness(scene.lens_light, params["lens_light"], x, y)
    return sb


def make_response(scene: Scene, psf_kernel=None) -> Callable:
    """The instrument as a linear map: sub-pixel surface brightness → observed image.

    ``response(sb)`` takes (…, ny·s, nx·s) surface brightness (flux/arcsec²) and
    returns (…, ny, nx) flux per pixel: the mean over each pixel's sub-pixels times
    the pixel area, convolved with the PSF after binning (``scene.convolution ==
    "pixel"``, ``psf_kernel`` sampled at the pixel scale) or before it
    (``"subpixel"``, ``psf_kernel`` sampled at pixel_scale / supersample). It is
    linear in ``sb`` and maps leading batch axes, so it also turns a basis of source
    images into their model images (:mod:`lensgen.lensing.pixelated`).
    """
    area = scene.pixel_scale**2
    if psf_kernel is not None and scene.convolution == "subpixel":
        subpixel = PSFTransfer(psf_kernel, scene.shape, scene.supersample)
        return lambda sb: subpixel.apply(sb) * area
    transfer = None if psf_kernel is None else PSFTransfer(psf_kernel, scene.shape)

    def response(sb):
        image = bin_image(sb, scene.supersample) * area
        return image if transfer is None else transfer.apply(image)

    return response


def render(scene: Scene, params, psf_kernel=None) -> jax.Array:
    """Render a lensed image, flux per pixel, shape ``scene.shape``.

    Parameters
    ----------
    scene : Scene
        Models, grid and supersampling.
    params : dict
        ``{"lens": [dict, ...], "source": [dict, ...], "lens_light": [dict, ...]}``
        with lenstronomy parameter names (arcsec, flux/arcsec²); a pytree, so
        gradients and ``vmap`` flow through it. Float32 leaves render in float32.
    psf_kernel : array, optional
        Odd-sized PSF kernel (unit sum for flux conservation), sampled at the pixel
        scale, or at pixel_scale / supersample when ``scene.convolution ==
        "subpixel"``; ``None`` for no PSF.

    Returns
    -------
    jax.Array, shape (ny, nx)
        Pixel area × mean over sub-pixels of the surface brightness, convolved with
        the PSF after or before the mean (module docstring).
    """
    return make_response(scene, psf_kernel)(subpixel_surface_brightness(scene, params))


def make_renderer(scene: Scene, psf_kernel=None) -> Callable:
    """A jitted ``f(params) -> image`` for a fixed scene and PSF.

    The PSF is prepared once here (:class:`~lensgen.lensing.instrument.PSFTransfer`),
    outside the traced function. Batched rendering is ``jax.vmap(f)(batched_params)``
    (or ``jax.lax.map(f, batched_params, batch_size=...)`` to keep large batches in
    cache on a CPU).
    """
    response = make_response(scene, psf_kernel)

    @jax.jit
    def renderer(params):
        return response(subpixel_surface_brightness(scene, params))

    return renderer


LINEAR_BASES = ("shapelets", "pixels")
"""Linear source bases: a shapelet set of order n (:mod:`lensgen.lensing.shapelets`) or an
n × n pixel grid (:mod:`lensgen.lensing.pixelgrid`)."""


def make_basis_renderer(scene: Scene, kind: str, n: int, psf_kernel=None) -> Callable:
    """A jitted ``f(lens_params, scale, center_x, center_y) -> (K, ny, nx)`` of a lensed basis.

    Each function of the basis ``kind`` at unit amplitude — the K = (n + 1)(n + 2)/2
    shapelets of order n and scale β = ``scale``, or the n² tents of an n × n grid of
    half-width ``scale`` — ray-traced through ``scene.lens`` from the sub-pixels and put
    through the instrument (:func:`make_response`): the columns of the linear model of
    the source (:mod:`lensgen.infer.linear`).
    """
    response = make_response(scene, psf_kernel)
    functions = {"shapelets": shapelet_basis, "pixels": grid_basis}[kind]
    if kind == "pixels" and scene.convolution == "pixel" and scene.supersample > 1:
        # The tents are binned as they are scattered (4× less to convolve and store).
        s = scene.supersample
        response = make_response(dataclasses.replace(scene, supersample=1), psf_kernel)
        functions = partial(grid_basis, bins=s)

    @jax.jit
    def basis_renderer(lens_params, scale, center_x, center_y):
        dtype = _param_dtype(lens_params)
        grid = pixel_grid(scene.shape, scene.pixel_scale, scene.supersample, scene.orientation)
        x, y = (jnp.asarray(c, dtype) for c in grid)
        beta_x, beta_y = ray_shoot(scene.lens, lens_params, x, y)
        images = functions(beta_x, beta_y, n, scale, center_x, center_y)
        # Kept apart from the products around them: fused into those, XLA on a CPU
        # recomputes the basis functions per output element (several times slower).
        images = response(jax.lax.optimization_barrier(images))
        return jax.lax.optimization_barrier(images)

    return basis_renderer


def render_source_plane(
    scene: Scene, params, shape: tuple[int, int], pixel_scale: float
) -> jax.Array:
    """The unlensed source light on its own grid, flux per pixel (no PSF).

    Uses ``scene.source`` with ``params["source"]`` and ``scene.supersample``
    sub-pixels per pixel; ``shape`` and ``pixel_scale`` (arcsec) define the
    source-plane grid centred on the origin.
    """
    dtype = _param_dtype(params["source"])
    x, y = (jnp.asarray(c, dtype) for c in pixel_grid(shape, pixel_scale, scene.supersample))
    sb = surface_brightness(scene.source, params["source"], x, y)
    return bin_image(sb, scene.supersample) * pixel_scale**2
