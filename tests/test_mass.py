"""Mass profiles: exact values, lenstronomy agreement, gradients, singular points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lenstronomy.LensModel.lens_model import LensModel

from lensgen.lensing import mass
from lensgen.lensing.mass import MASS_PROFILES

# Single profiles that lenstronomy also has; "SUBHALOS" (K TNFWs in one component) is
# tested against lenstronomy's TNFW sums in test_substructure.py.
SINGLE = sorted(set(MASS_PROFILES) - {"SUBHALOS"})

CENTER = {"center_x": 0.13, "center_y": -0.21}


def random_params(name, rng):
    """Random, physically sensible parameters of one profile (lenstronomy names)."""
    e = dict(e1=rng.uniform(-0.25, 0.25), e2=rng.uniform(-0.25, 0.25))  # q >= ~0.47
    return {
        "SIS": dict(theta_E=rng.uniform(0.5, 2.0), **CENTER),
        "SIE": dict(theta_E=rng.uniform(0.5, 2.0), **e, **CENTER),
        "EPL": dict(theta_E=rng.uniform(0.5, 2.0), gamma=rng.uniform(1.55, 2.45), **e, **CENTER),
        "SHEAR": dict(gamma1=rng.uniform(-0.1, 0.1), gamma2=rng.uniform(-0.1, 0.1), ra_0=0.2),
        "POINT_MASS": dict(theta_E=rng.uniform(0.5, 2.0), **CENTER),
        "NFW": dict(Rs=rng.uniform(0.5, 3.0), alpha_Rs=rng.uniform(0.1, 1.5), **CENTER),
        "TNFW": dict(
            Rs=rng.uniform(0.5, 3.0),
            alpha_Rs=rng.uniform(0.1, 1.5),
            r_trunc=rng.uniform(1.0, 8.0),
            **CENTER,
        ),
    }[name]


def random_points(rng, n=400):
    return rng.uniform(-3.0, 3.0, n), rng.uniform(-3.0, 3.0, n)


def test_exact_values():
    ax, ay = mass.sis_deflection(1.0, 2.0, 1.0)
    assert float(ax) == pytest.approx(0.44721359549995793, rel=1e-15)
    assert float(ay) == pytest.approx(0.89442719099991586, rel=1e-15)
    ax, ay = mass.shear_deflection(1.0, 2.0, 0.1, 0.1)
    np.testing.assert_allclose([ax, ay], [0.3, -0.1], rtol=1e-15)
    # point mass: |alpha| = theta_E^2 / r, radial
    ax, ay = mass.point_mass_deflection(3.0, 4.0, 2.0, 0.0, 0.0)
    np.testing.assert_allclose([ax, ay], [4.0 * 3 / 25, 4.0 * 4 / 25], rtol=1e-15)
    # isothermal kappa = 1/2 at the Einstein radius; EPL with gamma=2, e=0 is the SIS
    assert float(mass.sis_convergence(0.6, 0.8, 1.0)) == pytest.approx(0.5, rel=1e-15)
    np.testing.assert_allclose(
        mass.epl_deflection(1.0, 2.0, 1.0, 2.0), (0.44721359549995793, 0.89442719099991586)
    )
    # NFW: |alpha(Rs)| = alpha_Rs by definition of the parameterisation
    ax, ay = mass.nfw_deflection(0.6, 0.8, 1.0, 0.37)
    assert float(jnp.hypot(ax, ay)) == pytest.approx(0.37, rel=1e-14)


def test_registry_matches_contract():
    assert set(SINGLE) == {"SIS", "SIE", "EPL", "SHEAR", "POINT_MASS", "NFW", "TNFW"}
    assert MASS_PROFILES["SUBHALOS"].params == MASS_PROFILES["TNFW"].params
    assert MASS_PROFILES["EPL"].params == ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")
    assert MASS_PROFILES["SHEAR"].params == ("gamma1", "gamma2", "ra_0", "dec_0")
    assert MASS_PROFILES["TNFW"].params == ("Rs", "alpha_Rs", "r_trunc", "center_x", "center_y")
    assert MASS_PROFILES["SIE"].defaults == {"e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
    for name in SINGLE:
        assert (
            list(MASS_PROFILES[name].params)
            == LensModel([name]).lens_model.func_list[0].param_names
        )


@pytest.mark.parametrize("name", SINGLE)
def test_against_lenstronomy_float64(name):
    rng = np.random.default_rng(SINGLE.index(name))
    x, y = random_points(rng)
    for _ in range(3):
        kw = random_params(name, rng)
        lm = LensModel([name])
        ref_ax, ref_ay = lm.alpha(x, y, [kw])
        ax, ay = MASS_PROFILES[name].deflection(x, y, **kw)
        if name == "SIE":
            # lenstronomy's SIE is its NIE with a 1e-10 core: ~4e-9 absolute from s = 0.
            np.testing.assert_allclose(ax, ref_ax, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(ay, ref_ay, rtol=1e-8, atol=1e-8)
            # ... and its singular limit (EPL, gamma = 2) to rounding.
            epl = LensModel(["EPL"])
            ref_ax, ref_ay = epl.alpha(x, y, [dict(kw, gamma=2.0)])
            ref_k = epl.kappa(x, y, [dict(kw, gamma=2.0)])
        else:
            ref_k = lm.kappa(x, y, [kw])
        np.testing.assert_allclose(ax, ref_ax, rtol=1e-8)
        np.testing.assert_allclose(ay, ref_ay, rtol=1e-8)
        kappa = MASS_PROFILES[name].convergence(x, y, **kw)
        np.testing.assert_allclose(kappa, ref_k, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("name", SINGLE)
def test_against_lenstronomy_float32(name):
    rng = np.random.default_rng(7)
    x, y = random_points(rng, 200)
    kw = random_params(name, rng)
    lm = LensModel([name] if name != "SIE" else ["EPL"])
    ref_kw = kw if name != "SIE" else dict(kw, gamma=2.0)
    ref_ax, ref_ay = lm.alpha(x, y, [ref_kw])
    ref_k = lm.kappa(x, y, [ref_kw])
    kw32 = {k: np.float32(v) for k, v in kw.items()}
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ax, ay = MASS_PROFILES[name].deflection(x32, y32, **kw32)
    kappa = MASS_PROFILES[name].convergence(x32, y32, **kw32)
    assert ax.dtype == ay.dtype == kappa.dtype == jnp.float32
    scale = np.max(np.hypot(ref_ax, ref_ay))
    np.testing.assert_allclose(ax, ref_ax, rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(ay, ref_ay, rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(kappa, ref_k, rtol=1e-4, atol=1e-7)


def test_epl_low_axis_ratio_and_sie_round_limit():
    rng = np.random.default_rng(3)
    x, y = random_points(rng)
    # q = 0.25: still within rtol 1e-8 of lenstronomy's exact hypergeometric function
    kw = dict(theta_E=1.2, gamma=2.2, e1=0.6, e2=0.0, center_x=0.0, center_y=0.0)
    ref = LensModel(["EPL"]).alpha(x, y, [kw])
    np.testing.assert_allclose(mass.epl_deflection(x, y, **kw), ref, rtol=1e-8)
    # e = 0: lenstronomy's SIE uses q = 1 - 1e-8; ours is the exact SIS
    kw = dict(theta_E=1.2, e1=0.0, e2=0.0, center_x=0.1, center_y=0.0)
    ref = LensModel(["SIE"]).alpha(x, y, [kw])
    np.testing.assert_allclose(mass.sie_deflection(x, y, **kw), ref, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(
        mass.sie_deflection(x, y, **kw), mass.sis_deflection(x, y, 1.2, 0.1, 0.0), rtol=1e-14
    )
    # near-round SIE uses the k^2 series: continuous across the switch
    a = mass.sie_deflection(0.7, 0.4, 1.0, 1e-7, 0.0)
    b = mass.sie_deflection(0.7, 0.4, 1.0, 1e-6, 0.0)
    ref = LensModel(["EPL"]).alpha(0.7, 0.4, [dict(theta_E=1.0, gamma=2.0, e1=1e-7, e2=0.0)])
    np.testing.assert_allclose(a, ref, rtol=1e-12)
    assert np.all(np.abs(np.subtract(a, b)) < 1e-6)


def test_nfw_near_scale_radius_is_smooth():
    # X = R/Rs straddling 1 and the series switch at |X^2 - 1| = 0.05
    r = np.array([0.9, 0.9746, 0.9748, 0.999999, 1.0, 1.000001, 1.0246, 1.0248, 1.1])
    ref = LensModel(["NFW"]).alpha(r, 0 * r, [dict(Rs=1.0, alpha_Rs=1.0)])[0]
    ax, _ = mass.nfw_deflection(r, 0 * r, 1.0, 1.0)
    # lenstronomy's arccosh(1/X) loses ~1e-16/|X-1| there; ours uses a series
    np.testing.assert_allclose(ax, ref, rtol=1e-9)
    assert float(ax[4]) == pytest.approx(1.0, rel=1e-15)
    kappa = mass.nfw_convergence(r, 0 * r, 1.0, 1.0)
    ref_k = LensModel(["NFW"]).kappa(r, 0 * r, [dict(Rs=1.0, alpha_Rs=1.0)])
    far = np.abs(r - 1) > 1e-3  # lenstronomy's F(X) cancels catastrophically at X ~ 1
    np.testing.assert_allclose(kappa[far], ref_k[far], rtol=1e-8)
    # F(X) = 1/3 - 2(X - 1)/5 + O((X - 1)^2) at the scale radius
    F_taylor = 1.0 / 3.0 - 0.4 * (r[~far] - 1.0)
    np.testing.assert_allclose(kappa[~far], F_taylor / (2.0 * (1.0 + np.log(0.5))), rtol=1e-11)
    grad = jax.jit(jax.vmap(jax.grad(lambda x: mass.nfw_convergence(x, 0.0, 1.0, 1.0))))(r)
    assert np.all(np.isfinite(grad)) and np.all(grad < 0)


@pytest.mark.parametrize("name", SINGLE)
def test_parameter_gradients_match_finite_differences(name):
    rng = np.random.default_rng(11)
    kw = random_params(name, rng)
    x, y = jnp.asarray([0.9, -1.3, 2.1]), jnp.asarray([0.4, 1.7, -0.6])

    def f(p):
        ax, ay = MASS_PROFILES[name].deflection(x, y, **p)
        return jnp.sum(ax * jnp.array([1.0, 2.0, -1.0]) + ay) + jnp.sum(
            MASS_PROFILES[name].convergence(x, y, **p)
        )

    f = jax.jit(f)
    p0 = {k: jnp.asarray(v) for k, v in kw.items()}
    grad = jax.jit(jax.grad(f))(p0)
    for k in p0:
        h = 1e-6
        fd = (f({**p0, k: p0[k] + h}) - f({**p0, k: p0[k] - h})) / (2 * h)
        np.testing.assert_allclose(grad[k], fd, rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", SINGLE)
def test_centre_and_round_are_finite(name, dtype):
    kw = {k: dtype(v) for k, v in random_params(name, np.random.default_rng(0)).items()}
    kw.update({k: dtype(0.0) for k in ("center_x", "center_y", "ra_0", "e1", "e2") if k in kw})
    x = jnp.zeros(2, dtype)

    def f(p, x):
        ax, ay = MASS_PROFILES[name].deflection(x, x, **p)
        return jnp.sum(ax + ay + MASS_PROFILES[name].convergence(x, x, **p))

    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(kw, x)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert all(g.dtype == dtype for g in jax.tree.leaves(grads))


def test_float32_arctan_is_accurate_and_float64_exact():
    from lensgen.lensing._mass_util import arctan

    x = np.concatenate([np.linspace(-60, 60, 20001), np.logspace(-8, 8, 2001), [0.0]])
    ref = np.arctan(x)
    fast = np.asarray(arctan(jnp.asarray(x, jnp.float32)), np.float64)
    assert np.max(np.abs(fast - ref)) < 2.5e-7
    assert np.array_equal(
        np.asarray(arctan(jnp.asarray(x))), np.asarray(jnp.arctan(jnp.asarray(x)))
    )
