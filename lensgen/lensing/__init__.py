"""Physics, the ground floor: mass, light, ray-shooting, caustics, halos, instrument, rendering.

Nothing here imports the workflows above it (``tests/test_layering.py``). Lens models
are tuples of lenstronomy names (``("SIE", "SHEAR")``) with one parameter dict each.
"""

from lensgen.lensing.caustics import critical_curves_and_caustics
from lensgen.lensing.halos import HaloConventions, tnfw_from_mass
from lensgen.lensing.instrument import add_noise, gaussian_psf, moffat_psf, noise_map
from lensgen.lensing.light import LIGHT_PROFILES, surface_brightness
from lensgen.lensing.mass import MASS_PROFILES
from lensgen.lensing.raytrace import (
    convergence,
    deflection,
    hessian,
    magnification,
    ray_shoot,
    validate_lens,
)
from lensgen.lensing.render import Scene, make_renderer, render, render_source_plane

__all__ = [
    "HaloConventions",
    "LIGHT_PROFILES",
    "MASS_PROFILES",
    "Scene",
    "add_noise",
    "convergence",
    "critical_curves_and_caustics",
    "deflection",
    "gaussian_psf",
    "hessian",
    "magnification",
    "make_renderer",
    "moffat_psf",
    "noise_map",
    "ray_shoot",
    "render",
    "render_source_plane",
    "surface_brightness",
    "tnfw_from_mass",
    "validate_lens",
]
