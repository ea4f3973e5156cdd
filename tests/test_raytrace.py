"""Ray-tracing: sums of components, images, magnification, batching, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lenstronomy.LensModel.lens_model import LensModel

from lensgen.errors import LensgenError
from lensgen.lensing import raytrace as rt
from lensgen.lensing.caustics import critical_curves_and_caustics

MODEL = ("EPL", "SHEAR", "NFW", "TNFW", "POINT_MASS")
PARAMS = [
    dict(theta_E=1.3, gamma=2.15, e1=0.12, e2=-0.07, center_x=0.05, center_y=-0.1),
    dict(gamma1=0.04, gamma2=-0.02),
    dict(Rs=2.0, alpha_Rs=0.3, center_x=-0.4, center_y=0.2),
    dict(Rs=0.3, alpha_Rs=0.05, r_trunc=1.0, center_x=1.1, center_y=0.7),
    dict(theta_E=0.1, center_x=-1.0, center_y=-0.9),
]


def points(n=300, seed=5):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2.5, 2.5, n), rng.uniform(-2.5, 2.5, n)


def test_sum_of_components_matches_lenstronomy():
    x, y = points()
    lm = LensModel(list(MODEL))
    ax, ay = rt.deflection(MODEL, PARAMS, x, y)
    ref_ax, ref_ay = lm.alpha(x, y, PARAMS)
    np.testing.assert_allclose(ax, ref_ax, rtol=1e-8)
    np.testing.assert_allclose(ay, ref_ay, rtol=1e-8)
    np.testing.assert_allclose(
        rt.convergence(MODEL, PARAMS, x, y), lm.kappa(x, y, PARAMS), rtol=1e-8
    )
    bx, by = rt.ray_shoot(MODEL, PARAMS, x, y)
    ref_bx, ref_by = lm.ray_shooting(x, y, PARAMS)
    np.testing.assert_allclose(bx, ref_bx, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(by, ref_by, rtol=1e-8, atol=1e-12)


def test_hessian_and_magnification_match_lenstronomy():
    x, y = points(200)
    lm = LensModel(list(MODEL))
    hess = rt.hessian(MODEL, PARAMS, x, y)
    for ours, ref in zip(hess, lm.hessian(x, y, PARAMS), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(
        rt.magnification(MODEL, PARAMS, x, y), lm.magnification(x, y, PARAMS), rtol=1e-6
    )
    # the autodiff Hessian's trace is twice the analytic convergence
    np.testing.assert_allclose(
        0.5 * (hess[0] + hess[3]), rt.convergence(MODEL, PARAMS, x, y), rtol=1e-10
    )


def test_sis_images_and_magnifications():
    theta_E, beta = 1.2, np.array([0.3, -0.4])  # |beta| = 0.5
    bhat, b = beta / 0.5, 0.5
    images = np.stack([bhat * (b + theta_E), bhat * (b - theta_E)])
    model, params = ("SIS",), [dict(theta_E=theta_E)]
    bx, by = rt.ray_shoot(model, params, images[:, 0], images[:, 1])
    np.testing.assert_allclose(np.stack([bx, by], -1), [beta, beta], rtol=1e-14)
    mu = rt.magnification(model, params, images[:, 0], images[:, 1])
    # 1 + theta_E/|beta| for the outer image; the inner one is parity-flipped
    np.testing.assert_allclose(mu, [1 + theta_E / b, 1 - theta_E / b], rtol=1e-13)


def test_vmap_over_parameter_batch_equals_loop():
    x, y = points(50)
    rng = np.random.default_rng(1)
    n = 4
    batch = [{k: jnp.asarray(v * rng.uniform(0.9, 1.1, n)) for k, v in p.items()} for p in PARAMS]
    f = jax.jit(jax.vmap(lambda p: rt.deflection(MODEL, p, x, y)))
    ax, ay = f(batch)
    for i in range(n):
        single = [{k: v[i] for k, v in p.items()} for p in batch]
        sx, sy = rt.deflection(MODEL, single, x, y)
        np.testing.assert_allclose(ax[i], sx, rtol=1e-13)
        np.testing.assert_allclose(ay[i], sy, rtol=1e-13)


def test_jit_gradient_at_exact_lens_centre_is_finite():
    # (each profile's centre gradient is checked in test_mass; this covers the
    # lens-equation Jacobian and the sum at the exact centre, round SIE included)
    model = ("SIE", "SHEAR", "SIS")
    params = [
        dict(theta_E=1.0, e1=0.0, e2=0.0),
        dict(gamma1=0.0, gamma2=0.0),
        dict(theta_E=0.2),
    ]

    @jax.jit
    def loss(p, xy):
        bx, by = rt.ray_shoot(model, p, xy[0], xy[1])
        mu = rt.magnification(model, p, xy[0], xy[1])
        return jnp.sum(bx**2 + by**2) + jnp.sum(mu) + jnp.sum(rt.convergence(model, p, *xy))

    xy = jnp.zeros((2, 3))
    grads = jax.grad(loss, argnums=(0, 1))(params, xy)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_critical_curves_and_caustics_of_sis():
    crit, caus = critical_curves_and_caustics(("SIS",), [dict(theta_E=1.0)], (40, 40), 0.1)
    radii = [np.hypot(cx, cy) for cx, cy in crit]
    tangential = max(range(len(radii)), key=lambda i: radii[i].mean())
    np.testing.assert_allclose(radii[tangential], 1.0, atol=5e-3)
    # the tangential critical curve of an SIS maps to the point caustic at the centre
    np.testing.assert_allclose(np.hypot(*caus[tangential]), 0.0, atol=5e-3)


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        (("SIE",), [dict(theta_E=-1.0)], "lens component 0 (SIE): theta_E must be > 0, got -1.0"),
        (("SIEE",), [dict(theta_E=1.0)], "unknown lens model 'SIEE' (did you mean 'SIE'?)"),
        (
            ("SIS", "SHEAR"),
            [dict(theta_E=1.0), dict(gamma_1=0.1)],
            "lens component 1 (SHEAR): unknown parameter 'gamma_1' (did you mean 'gamma1'?)",
        ),
        (("EPL",), [dict(theta_E=1.0)], "lens component 0 (EPL): missing parameter(s) 'gamma'"),
        (("SIE",), [dict(theta_E=1.0, e1=0.8, e2=0.8)], "|e| = sqrt(e1^2 + e2^2) must be < 1"),
        (("EPL",), [dict(theta_E=1.0, gamma=3.5)], "gamma must be in (1, 3), got 3.5"),
        (("NFW",), [dict(Rs=1.0, alpha_Rs=float("nan"))], "alpha_Rs must be finite, got nan"),
        (("SIS", "SIS"), [dict(theta_E=1.0)], "2 component(s)"),
        (("SIS",), [dict(theta_E=np.array([1.0, 0.0]))], "theta_E must be > 0, got 0.0 (in a"),
    ],
)
def test_validate_lens_messages(model, params, message):
    with pytest.raises(LensgenError) as err:
        rt.validate_lens(model, params)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_validate_lens_accepts_valid_and_defaults():
    rt.validate_lens(MODEL, PARAMS)
    rt.validate_lens(("SIE", "SHEAR"), [dict(theta_E=1.0), dict(gamma1=0.0, gamma2=0.0)])
