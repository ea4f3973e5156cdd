"""Light profiles: exact values and agreement with lenstronomy's LightModel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lenstronomy.LightModel.light_model import LightModel

from lensgen.errors import LensgenError
from lensgen.lensing import light

RNG = np.random.default_rng(42)
X = RNG.uniform(-3, 3, 400)
Y = RNG.uniform(-3, 3, 400)
# Points at and next to a profile centre exercise lenstronomy's 1e-4 radius floor.
X = np.concatenate([X, [0.1, 0.1 + 3e-5, 0.1 - 1e-3]])
Y = np.concatenate([Y, [-0.2, -0.2, -0.2]])

CASES = [
    ("SERSIC", {"amp": 3.0, "R_sersic": 0.7, "n_sersic": 2.5, "center_x": 0.1, "center_y": -0.2}),
    (
        "SERSIC_ELLIPSE",
        {
            "amp": 1.7,
            "R_sersic": 0.5,
            "n_sersic": 4.0,
            "e1": 0.2,
            "e2": -0.15,
            "center_x": 0.1,
            "center_y": -0.2,
        },
    ),
    ("SERSIC_ELLIPSE", {"amp": 1.0, "R_sersic": 1e-3, "n_sersic": 0.8, "e1": 0.0, "e2": 0.3}),
    ("GAUSSIAN", {"amp": 5.0, "sigma": 0.4, "center_x": 0.1, "center_y": -0.2}),
    (
        "GAUSSIAN_ELLIPSE",
        {"amp": 2.0, "sigma": 0.6, "e1": -0.3, "e2": 0.1, "center_x": 0.1, "center_y": -0.2},
    ),
]


def test_sersic_exact_value():
    value = light.sersic(1.0, 2.0, amp=1.0, R_sersic=1.0, n_sersic=1.0)
    assert float(value) == pytest.approx(0.12658651833626802, rel=1e-14)
    # amp is the surface brightness at R_sersic.
    assert float(light.sersic(0.0, 0.8, 2.5, 0.8, 3.0)) == pytest.approx(2.5, rel=1e-14)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_matches_lenstronomy(name, kwargs):
    ours = light.surface_brightness((name,), [kwargs], jnp.asarray(X), jnp.asarray(Y))
    ref = LightModel([name]).surface_brightness(X, Y, [kwargs])
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-8, atol=0)


def test_sersic_cut_beyond_1000_r_sersic():
    r = jnp.array([0.5, 0.999, 1.001])
    values = light.sersic(r, 0.0, amp=1.0, R_sersic=1e-3, n_sersic=8.0)
    assert float(values[1]) > 0
    assert float(values[2]) == 0.0


def test_gaussian_amp_is_total_flux():
    g = jnp.linspace(-5, 5, 501)
    x, y = jnp.meshgrid(g, g)
    sb = light.gaussian_ellipse(x, y, amp=3.0, sigma=0.5, e1=0.2, e2=0.1)
    assert float(sb.sum() * (g[1] - g[0]) ** 2) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amp": 1.3, "center_x": 0.0, "center_y": 0.0, "phi_G": 0.0, "scale": 0.1},
        {"amp": 0.7, "center_x": 0.13, "center_y": -0.07, "phi_G": 0.4, "scale": 0.08},
    ],
)
def test_interpol_matches_lenstronomy(kwargs):
    image = np.random.default_rng(1).uniform(0, 2, (9, 12))  # non-square: checks axes
    # Points inside, on the one-pixel zero margin and far outside the image.
    x = np.random.default_rng(2).uniform(-0.9, 0.9, 600)
    y = np.random.default_rng(3).uniform(-0.8, 0.8, 600)
    ours = light.interpolated(jnp.asarray(x), jnp.asarray(y), jnp.asarray(image), **kwargs)
    ref = LightModel(["INTERPOL"]).surface_brightness(x, y, [{"image": image, **kwargs}])
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-10, atol=1e-12)
    assert np.any(ref == 0) and np.any(ref > 0)


def test_interpol_reproduces_pixels_and_zero_outside():
    image = jnp.arange(12.0).reshape(3, 4)
    # Pixel (row 2, col 3) sits at u = 3 − 1.5, v = 2 − 1 in pixel units.
    assert float(light.interpolated(1.5 * 0.2, 1.0 * 0.2, image, scale=0.2)) == 11.0
    assert float(light.interpolated(-1.5, -1.0, image)) == 0.0
    # Half-way into the zero margin the value halves.
    assert float(light.interpolated(2.0, 1.0, image)) == pytest.approx(5.5)
    assert float(light.interpolated(10.0, 0.0, image)) == 0.0


def test_interpol_gradients_finite_difference():
    image = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (6, 6)))
    x = jnp.linspace(-0.25, 0.3, 7)
    y = jnp.linspace(0.2, -0.22, 7)

    @jax.jit
    def total(img, cx, phi):
        return jnp.sum(light.interpolated(x, y, img, 1.0, cx, 0.01, phi, 0.1) ** 2)

    g_img, g_cx, g_phi = jax.grad(total, argnums=(0, 1, 2))(image, 0.013, 0.3)
    eps = 1e-6
    bump = jnp.zeros_like(image).at[2, 3].set(eps)
    fd_img = (total(image + bump, 0.013, 0.3) - total(image - bump, 0.013, 0.3)) / (2 * eps)
    fd_cx = (total(image, 0.013 + eps, 0.3) - total(image, 0.013 - eps, 0.3)) / (2 * eps)
    fd_phi = (total(image, 0.013, 0.3 + eps) - total(image, 0.013, 0.3 - eps)) / (2 * eps)
    assert float(g_img[2, 3]) == pytest.approx(float(fd_img), rel=1e-6)
    assert float(g_cx) == pytest.approx(float(fd_cx), rel=1e-5)
    assert float(g_phi) == pytest.approx(float(fd_phi), rel=1e-5)


def test_sersic_gradient_finite_at_centre():
    g = jax.grad(lambda n: light.sersic_ellipse(0.0, 0.0, 1.0, 0.5, n, 0.1, 0.0))(2.0)
    assert np.isfinite(float(g))
    gx = jax.grad(lambda x: light.sersic(x, 0.0, 1.0, 0.5, 2.0))(0.0)
    assert float(gx) == 0.0


def test_unknown_names_and_keys_raise():
    with pytest.raises(LensgenError, match="SERSICC"):
        light.surface_brightness(("SERSICC",), [{}], 0.0, 0.0)
    with pytest.raises(LensgenError, match="R_sersc"):
        light.surface_brightness(
            ("SERSIC",), [{"amp": 1.0, "R_sersc": 1.0, "n_sersic": 1.0}], 0.0, 0.0
        )
    with pytest.raises(LensgenError, match="missing"):
        light.surface_brightness(("GAUSSIAN",), [{"amp": 1.0}], 0.0, 0.0)
