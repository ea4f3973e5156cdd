"""The image renderer: ray-shoot sub-pixels, evaluate light, bin, convolve with the PSF.

For an image of pixel size Δ and supersampling s,

    image = PSF ⊛ [ Δ² · mean_{s×s}( I_src(β(θ)) + I_lens(θ) ) ],

where θ are the sub-pixel centres, β = θ − α(θ) the lens equation
(:func:`lensgen.lensing.raytrace.ray_shoot`), I_src and I_lens the source and
lens-light surface brightness (flux/arcsec²) and ⊛ a convolution with zero boundary.
This is lenstronomy's ``ImageModel`` with ``supersampling_convolution=False``:
the result is flux per pixel.

Everything here is a pure function of a parameter pytree, so it can be jitted,
vmapped over batches of parameters and differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lensgen.errors import LensgenError
from lensgen.lensing.grid import bin_image, check_grid, pixel_grid
from lensgen.lensing.instrument import PSFTransfer
from lensgen.lensing.light import LIGHT_PROFILES, surface_brightness
from lensgen.lensing.raytrace import ray_shoot


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
    """

    lens: tuple[str, ...]
    source: tuple[str, ...]
    lens_light: tuple[str, ...] = ()
    shape: tuple[int, int]
    pixel_scale: float
    supersample: int = 1

    def __post_init__(self):
        # Lists would make the scene unhashable; accept them and store tuples.
        for name in ("lens", "source", "lens_light", "shape"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        check_grid(self.shape, self.pixel_scale, self.supersample)
        object.__setattr__(self, "supersample", int(self.supersample))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
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


def _unconvolved(scene: Scene, params) -> jax.Array:
    dtype = _param_dtype(params)
    x, y = (
        jnp.asarray(c, dtype) for c in pixel_grid(scene.shape, scene.pixel_scale, scene.supersample)
    )
    beta_x, beta_y = ray_shoot(scene.lens, params["lens"], x, y)
    sb = surface_brightness(scene.source, params["source"], beta_x, beta_y)
    if scene.lens_light:
        sb = sb + surface_brightness(scene.lens_light, params["lens_light"], x, y)
    return bin_image(sb, scene.supersample) * scene.pixel_scale**2


def _transfer(scene: Scene, psf_kernel) -> PSFTransfer | None:
    return None if psf_kernel is None else PSFTransfer(psf_kernel, scene.shape)


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
        Odd-sized PSF kernel (unit sum for flux conservation); ``None`` for no PSF.

    Returns
    -------
    jax.Array, shape (ny, nx)
        PSF ⊛ [pixel area × mean over sub-pixels of the surface brightness].
    """
    image = _unconvolved(scene, params)
    transfer = _transfer(scene, psf_kernel)
    return image if transfer is None else transfer.apply(image)


def make_renderer(scene: Scene, psf_kernel=None) -> Callable:
    """A jitted ``f(params) -> image`` for a fixed scene and PSF.

    The PSF is prepared once here (:class:`~lensgen.lensing.instrument.PSFTransfer`),
    outside the traced function. Batched rendering is ``jax.vmap(f)(batched_params)``
    (or ``jax.lax.map(f, batched_params, batch_size=...)`` to keep large batches in
    cache on a CPU).
    """
    transfer = _transfer(scene, psf_kernel)

    @jax.jit
    def renderer(params):
        image = _unconvolved(scene, params)
        return image if transfer is None else transfer.apply(image)

    return renderer


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
