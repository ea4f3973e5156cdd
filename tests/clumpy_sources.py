"""Non-parametric test sources lensed by an independent renderer (lenstronomy).

The recipe differs from every training galaxy of lensgen (:mod:`lensgen.data.synthetic`):
an exponential disk, seen through a random shear, plus 3–6 compact Gaussian clumps
scattered over it and a small companion, summed on a fine pixel grid. lenstronomy
lenses that image as an ``INTERPOL`` source (SIE + external shear, Gaussian PSF,
Poisson noise and a Gaussian background), at the demo's field, pixel size and source
flux. lensgen's renderer, priors and noise model take no part in making the data.

Used by ``tests/test_linear_source.py`` and ``benchmarks/bench_real_sources.py``.
"""

from __future__ import annotations

import numpy as np

from lensgen.io.fits import Observation
from lensgen.lensing.instrument import gaussian_psf

SOURCE_PIXELS, SOURCE_SCALE = 80, 0.02
"""The test source's own grid: 80 × 80 pixels of 0.02″ (1.6″ across)."""
FLUX = 50.0
"""Total source flux (counts/s), as the demo's seed case."""


def clumpy_galaxy(rng: np.random.Generator) -> np.ndarray:
    """A clumpy disk galaxy with a companion on the source grid, unit total flux."""
    half = (SOURCE_PIXELS - 1) / 2 * SOURCE_SCALE
    x, y = np.meshgrid(*(np.linspace(-half, half, SOURCE_PIXELS),) * 2)
    g1, g2 = rng.uniform(-0.3, 0.3, 2)
    xs, ys = (1 - g1) * x - g2 * y, -g2 * x + (1 + g1) * y
    r_d = rng.uniform(0.06, 0.12)
    light = np.exp(-np.hypot(xs, ys) / r_d) / r_d**2
    light /= light.sum()
    clumps = rng.integers(3, 7)
    fractions = rng.dirichlet(np.ones(clumps)) * rng.uniform(0.25, 0.5)
    for f in fractions:
        r, phi = 2.0 * r_d * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        s = rng.uniform(0.02, 0.04)
        blob = np.exp(-((x - r * np.cos(phi)) ** 2 + (y - r * np.sin(phi)) ** 2) / (2 * s**2))
        light = light + f * blob / blob.sum()
    r, phi = rng.uniform(0.3, 0.45), rng.uniform(0, 2 * np.pi)
    s = rng.uniform(0.03, 0.05)
    blob = np.exp(-((x - r * np.cos(phi)) ** 2 + (y - r * np.sin(phi)) ** 2) / (2 * s**2))
    light = light + rng.uniform(0.05, 0.12) * blob / blob.sum()
    return light / light.sum()


def lensed_observation(
    seed: int,
    npix: int = 60,
    pixel_scale: float = 0.133,
    psf_fwhm: float = 0.15,
    exptime: float = 1000.0,
    background_rms: float = 0.05,
) -> tuple[Observation, dict]:
    """A lenstronomy-lensed clumpy source as a lensgen observation, and its truth.

    Lens SIE + SHEAR with θ_E ~ U(1.6, 2.4)″ and mild ellipticity and shear; the source
    centred within 0.1″ of the optical axis. Supersampling 4 in lenstronomy (the
    observation records supersampling 2 for lensgen's fits, which is what real data
    would leave to the modeller).
    """
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    rng = np.random.default_rng(seed)
    galaxy = clumpy_galaxy(rng)
    lens = [
        {"theta_E": rng.uniform(1.6, 2.4), "e1": rng.uniform(-0.1, 0.1),
         "e2": rng.uniform(-0.1, 0.1), "center_x": 0.0, "center_y": 0.0},
        {"gamma1": rng.uniform(-0.03, 0.03), "gamma2": rng.uniform(-0.03, 0.03)},
    ]  # fmt: skip
    centre = rng.uniform(-0.1, 0.1, 2)
    # INTERPOL takes surface brightness per source pixel area (flux/arcsec²) × scale².
    source = [{"image": galaxy * FLUX / SOURCE_SCALE**2, "amp": 1.0, "center_x": centre[0],
               "center_y": centre[1], "phi_G": 0.0, "scale": SOURCE_SCALE}]  # fmt: skip
    psf_kernel = gaussian_psf(psf_fwhm, pixel_scale)
    data = ImageData(
        image_data=np.zeros((npix, npix)),
        transform_pix2angle=np.diag([pixel_scale, pixel_scale]),
        ra_at_xy_0=-(npix - 1) / 2 * pixel_scale,
        dec_at_xy_0=-(npix - 1) / 2 * pixel_scale,
    )
    model = ImageModel(
        data,
        PSF(psf_type="PIXEL", kernel_point_source=psf_kernel),
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(["INTERPOL"]),
        kwargs_numerics={"supersampling_factor": 4, "supersampling_convolution": False},
    )
    clean = model.image(lens, source)
    counts = rng.poisson(np.maximum(clean, 0) * exptime) / exptime
    image = counts + rng.normal(0.0, background_rms, clean.shape)
    truth = {f"lens.0.{k}": float(v) for k, v in lens[0].items()}
    truth.update({f"lens.1.{k}": float(v) for k, v in lens[1].items()})
    obs = Observation(
        image=image,
        pixel_scale=pixel_scale,
        psf=psf_kernel,
        exptime=exptime,
        background_rms=background_rms,
        supersample=2,
        truth=truth,
        scene={"lens": ["SIE", "SHEAR"], "source": ["INTERPOL"], "lens_light": []},
    )
    return obs, {"clean": clean, "galaxy": galaxy}
