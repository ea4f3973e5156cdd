"""Rendered images against lenstronomy's ImageModel, convergence and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from lensgen.errors import LensgenError
from lensgen.lensing.instrument import gaussian_psf
from lensgen.lensing.render import Scene, make_renderer, render, render_source_plane

NPIX, SCALE = 40, 0.08
LENS = [
    {"theta_E": 1.1, "e1": 0.12, "e2": -0.05, "center_x": 0.03, "center_y": -0.02},
    {"gamma1": 0.03, "gamma2": -0.02},
]
SOURCE = [
    {
        "amp": 8.0,
        "R_sersic": 0.25,
        "n_sersic": 1.5,
        "e1": 0.1,
        "e2": 0.2,
        "center_x": 0.08,
        "center_y": 0.05,
    }
]
LENS_LIGHT = [{"amp": 3.0, "R_sersic": 0.6, "n_sersic": 4.0, "center_x": 0.03, "center_y": -0.02}]
PSF_KERNEL = gaussian_psf(fwhm=0.2, pixel_scale=SCALE)


def _scene(supersample, source=("SERSIC_ELLIPSE",), lens_light=()):
    return Scene(
        lens=("SIE", "SHEAR"),
        source=source,
        lens_light=lens_light,
        shape=(NPIX, NPIX),
        pixel_scale=SCALE,
        supersample=supersample,
    )


def _lenstronomy_image(supersample, source_model, kwargs_source, lens_light=(), kwargs_ll=None):
    data = ImageData(
        image_data=np.zeros((NPIX, NPIX)),
        transform_pix2angle=np.diag([SCALE, SCALE]),
        ra_at_xy_0=-(NPIX - 1) / 2 * SCALE,
        dec_at_xy_0=-(NPIX - 1) / 2 * SCALE,
    )
    psf = PSF(psf_type="PIXEL", kernel_point_source=PSF_KERNEL)
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(list(source_model)),
        lens_light_model_class=LightModel(list(lens_light)),
        kwargs_numerics={
            "supersampling_factor": supersample,
            "supersampling_convolution": False,
        },
    )
    return model.image(LENS, kwargs_source, kwargs_lens_light=kwargs_ll or [])


@pytest.mark.parametrize("supersample", [1, 3])
def test_matches_lenstronomy_image_model(supersample):
    ours = render(
        _scene(supersample, lens_light=("SERSIC",)),
        {"lens": LENS, "source": SOURCE, "lens_light": LENS_LIGHT},
        PSF_KERNEL,
    )
    ref = _lenstronomy_image(supersample, ("SERSIC_ELLIPSE",), SOURCE, ("SERSIC",), LENS_LIGHT)
    assert np.max(np.abs(np.asarray(ours) - ref)) / ref.max() < 1e-6
    # Source-only images too (no lens light to dominate the comparison).
    ours = render(_scene(supersample), {"lens": LENS, "source": SOURCE}, PSF_KERNEL)
    ref = _lenstronomy_image(supersample, ("SERSIC_ELLIPSE",), SOURCE)
    assert np.max(np.abs(np.asarray(ours) - ref)) / ref.max() < 1e-6


def _interpol_source(image):
    return [
        {
            "image": image,
            "amp": 2.0,
            "center_x": 0.05,
            "center_y": -0.03,
            "phi_G": 0.3,
            "scale": 0.03,
        }
    ]


def test_interpol_source_matches_lenstronomy():
    stamp = np.random.default_rng(5).uniform(0, 1, (24, 24))
    source = _interpol_source(stamp)
    ours = render(_scene(2, source=("INTERPOL",)), {"lens": LENS, "source": source}, PSF_KERNEL)
    ref = _lenstronomy_image(2, ("INTERPOL",), source)
    assert ref.max() > 0
    assert np.max(np.abs(np.asarray(ours) - ref)) / ref.max() < 1e-6


def test_supersampling_converges():
    params = {"lens": LENS, "source": [{**SOURCE[0], "R_sersic": 0.08}]}
    images = {s: np.asarray(render(_scene(s), params)) for s in (1, 3, 5, 9)}
    changes = [np.abs(images[b] - images[a]).max() for a, b in ((1, 3), (3, 5), (5, 9))]
    assert changes[0] > changes[1] > changes[2]
    assert changes[2] < 0.2 * changes[0]


def test_gradients_match_finite_differences():
    stamp = jnp.asarray(np.random.default_rng(6).uniform(0, 1, (24, 24)))
    scene = _scene(1, source=("INTERPOL",))
    weights = jnp.asarray(np.random.default_rng(7).normal(size=(NPIX, NPIX)))

    def loss(theta_E, image):
        lens = [{**LENS[0], "theta_E": theta_E}, LENS[1]]
        out = render(scene, {"lens": lens, "source": _interpol_source(image)}, PSF_KERNEL)
        return jnp.sum(weights * out)

    g_theta, g_image = jax.jit(jax.grad(loss, argnums=(0, 1)))(1.1, stamp)
    eps = 1e-6
    fd_theta = (loss(1.1 + eps, stamp) - loss(1.1 - eps, stamp)) / (2 * eps)
    assert float(g_theta) == pytest.approx(float(fd_theta), rel=1e-5)
    # The loss is linear in the source pixels: the finite difference is exact.
    bump = jnp.zeros_like(stamp).at[11, 13].set(1.0)
    fd_pixel = loss(1.1, stamp + bump) - loss(1.1, stamp)
    assert float(g_image[11, 13]) == pytest.approx(float(fd_pixel), rel=1e-8)
    assert float(jnp.abs(g_image).max()) > 0


def test_vmap_float32_and_renderer_agree():
    scene = _scene(3)
    f = make_renderer(scene, PSF_KERNEL)
    thetas = jnp.array([0.9, 1.1, 1.3])
    batched = {
        "lens": [{**LENS[0], "theta_E": thetas}, LENS[1]],
        "source": SOURCE,
    }
    in_axes = {
        "lens": [{k: (0 if k == "theta_E" else None) for k in LENS[0]}, {k: None for k in LENS[1]}],
        "source": [{k: None for k in SOURCE[0]}],
    }
    images = jax.vmap(f, in_axes=(in_axes,))(batched)
    single = render(
        scene, {"lens": [{**LENS[0], "theta_E": 1.3}, LENS[1]], "source": SOURCE}, PSF_KERNEL
    )
    np.testing.assert_allclose(np.asarray(images[2]), np.asarray(single), rtol=1e-12, atol=1e-14)
    # A PSF passed through jit as an argument (traced) gives the same image.
    traced = jax.jit(lambda p, k: render(scene, p, k))(
        {"lens": LENS, "source": SOURCE}, jnp.asarray(PSF_KERNEL)
    )
    np.testing.assert_allclose(
        np.asarray(traced), np.asarray(f({"lens": LENS, "source": SOURCE})), rtol=1e-12, atol=1e-14
    )
    as32 = jax.tree_util.tree_map(
        lambda v: jnp.asarray(v, jnp.float32), {"lens": LENS, "source": SOURCE}
    )
    image32 = f(as32)
    assert image32.dtype == jnp.float32
    ref = np.asarray(f({"lens": LENS, "source": SOURCE}))
    assert np.max(np.abs(np.asarray(image32) - ref)) / ref.max() < 1e-4


def test_source_plane_flux_and_scene_errors():
    scene = Scene(lens=("SIS",), source=("GAUSSIAN",), shape=(8, 8), pixel_scale=0.1)
    source = [{"amp": 4.0, "sigma": 0.1}]
    plane = render_source_plane(scene, {"source": source}, (64, 64), 0.025)
    assert float(plane.sum()) == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(LensgenError, match="SERSIK"):
        Scene(lens=("SIS",), source=("SERSIK",), shape=(8, 8), pixel_scale=0.1)
    with pytest.raises(LensgenError, match="supersample"):
        Scene(lens=("SIS",), source=("GAUSSIAN",), shape=(8, 8), pixel_scale=0.1, supersample=0)
    assert hash(scene) == hash(
        Scene(lens=["SIS"], source=["GAUSSIAN"], shape=[8, 8], pixel_scale=0.1)
    )
