"""Subhalos: vectorised TNFW sum, padding, population sampling, unit conversion, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensgen.errors import ConfigError, LensgenError
from lensgen.lensing import raytrace
from lensgen.lensing.halos import HaloConventions, concentration, tnfw_from_mass
from lensgen.lensing.mass import MASS_PROFILES, MassProfile
from lensgen.lensing.nfw import tnfw_convergence, tnfw_deflection
from lensgen.lensing.substructure import (
    SUBHALO_PARAMS,
    subhalos_convergence,
    subhalos_deflection,
)
from lensgen.lensing.units import lensing_units, tnfw_lensing_params
from lensgen.simulate.population import SubhaloPopulation, sample_masses, sample_subhalos

SUB_PROFILE = MassProfile(subhalos_deflection, subhalos_convergence, SUBHALO_PARAMS, {})


def _subhalos(key, k=6):
    ks = jax.random.split(key, 5)
    return {
        "Rs": jax.random.uniform(ks[0], (k,), minval=0.05, maxval=0.4),
        "alpha_Rs": jax.random.uniform(ks[1], (k,), minval=1e-3, maxval=0.05),
        "r_trunc": jax.random.uniform(ks[2], (k,), minval=0.5, maxval=3.0),
        "center_x": jax.random.uniform(ks[3], (k,), minval=-2, maxval=2),
        "center_y": jax.random.uniform(ks[4], (k,), minval=-2, maxval=2),
    }


def _grid(n=30):
    x, y = np.meshgrid(np.linspace(-3, 3, n), np.linspace(-2.9, 3.1, n))
    return jnp.asarray(x), jnp.asarray(y)


def test_sum_equals_loop_over_tnfw_and_lenstronomy(key, monkeypatch):
    p = _subhalos(key)
    x, y = _grid()
    ax, ay = jax.jit(subhalos_deflection)(x, y, **p)
    kappa = jax.jit(subhalos_convergence)(x, y, **p)

    @jax.jit
    def loop(p):
        ex = ey = ek = 0.0
        for i in range(6):
            one = {k: v[i] for k, v in p.items()}
            dx, dy = tnfw_deflection(x, y, **one)
            ex, ey, ek = ex + dx, ey + dy, ek + tnfw_convergence(x, y, **one)
        return ex, ey, ek

    ex, ey, ek = loop(p)
    np.testing.assert_allclose(ax, ex, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ay, ey, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(kappa, ek, rtol=1e-12, atol=1e-15)
    # Through the ray tracer as one component, and against lenstronomy's TNFW sum.
    monkeypatch.setitem(MASS_PROFILES, "SUBHALOS", SUB_PROFILE)
    rx, ry = raytrace.deflection(("SUBHALOS",), [p], x, y)
    np.testing.assert_allclose(rx, ex, rtol=1e-12, atol=1e-15)
    from lenstronomy.LensModel.lens_model import LensModel

    kwargs = [{k: float(v[i]) for k, v in p.items()} for i in range(6)]
    lx, ly = LensModel(["TNFW"] * 6).alpha(np.asarray(x), np.asarray(y), kwargs)
    np.testing.assert_allclose(ax, lx, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(ay, ly, rtol=1e-6, atol=1e-10)


def test_padding_contributes_exactly_zero_with_finite_gradients(key):
    p = _subhalos(key, 4)
    x, y = _grid(20)
    # Padding: alpha_Rs = 0; the other values may be anything, including zero radii.
    junk = {"Rs": [0.0, 0.3], "alpha_Rs": [0.0, 0.0], "r_trunc": [0.0, 5.0],
            "center_x": [0.0, 1.0], "center_y": [0.0, -7.0]}  # fmt: skip
    padded = {k: jnp.concatenate([v, jnp.asarray(junk[k])]) for k, v in p.items()}
    defl, conv = jax.jit(subhalos_deflection), jax.jit(subhalos_convergence)
    pad = {k: jnp.asarray(v) for k, v in junk.items()}
    for a in (*defl(x, y, **pad), conv(x, y, **pad)):
        assert np.all(np.asarray(a) == 0)
    # Padded and unpadded sums agree (to summation order, which XLA may change with K).
    for a, b in zip(defl(x, y, **p), defl(x, y, **padded), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-18)
    np.testing.assert_allclose(conv(x, y, **p), conv(x, y, **padded), rtol=1e-13, atol=1e-18)

    @jax.jit
    def loss(q):
        ax, ay = defl(x, y, **q)
        return jnp.sum(ax**2 + ay**2)

    g = jax.grad(loss)(padded)
    assert all(np.all(np.isfinite(v)) for v in g.values())
    assert np.all(np.asarray(g["Rs"][4:]) == 0) and np.any(np.asarray(g["alpha_Rs"][4:]) != 0)
    # The gradient of a real subhalo matches finite differences.
    eps = 1e-6
    bumped = dict(padded, alpha_Rs=padded["alpha_Rs"].at[1].add(eps))
    fd = (loss(bumped) - loss(padded)) / eps
    assert float(g["alpha_Rs"][1]) == pytest.approx(float(fd), rel=1e-4)


def test_mass_function_slope_recovered(key):
    m = np.asarray(sample_masses(key, (200_000,), 1e7, 1e10, 1.9))
    assert m.min() >= 1e7 and m.max() <= 1e10
    edges = np.logspace(7, 10, 16)
    counts, _ = np.histogram(m, edges)
    centres = np.sqrt(edges[1:] * edges[:-1])
    slope = np.polyfit(np.log(centres), np.log(counts / np.diff(edges)), 1)[0]
    assert abs(slope + 1.9) < 0.1
    # The same through the population sampler, with another slope.
    pop = SubhaloPopulation(slope=1.5, n_subhalos=100, m_min=1e6, m_max=1e9)
    draws = jax.jit(jax.vmap(lambda k: sample_subhalos(k, pop, 1.5)))(jax.random.split(key, 1000))
    m = np.asarray(draws["mass"]).ravel()
    counts, _ = np.histogram(m, np.logspace(6, 9, 13))
    edges = np.logspace(6, 9, 13)
    centres = np.sqrt(edges[1:] * edges[:-1])
    slope = np.polyfit(np.log(centres), np.log(counts / np.diff(edges)), 1)[0]
    assert abs(slope + 1.5) < 0.1
    # slope 1: log-uniform, mean of log10 m is the midpoint.
    m1 = np.asarray(sample_masses(key, (100_000,), 1e7, 1e9, 1.0))
    assert np.log10(m1).mean() == pytest.approx(8.0, abs=0.01)


def test_poisson_count_fixed_count_and_positions(key):
    pop = SubhaloPopulation(n_mean=7.5, width=0.2)
    assert pop.k_max == math.ceil(7.5 + 6 * math.sqrt(7.5)) + 3
    draws = jax.jit(jax.vmap(lambda k: sample_subhalos(k, pop, 1.4, 0.3, -0.2)))(
        jax.random.split(key, 4000)
    )
    counts = np.asarray(draws["mask"]).sum(axis=1)
    assert counts.mean() == pytest.approx(7.5, abs=4 * math.sqrt(7.5 / 4000))
    assert counts.var() == pytest.approx(7.5, rel=0.1)
    mask = np.asarray(draws["mask"])
    r = np.hypot(np.asarray(draws["center_x"]) - 0.3, np.asarray(draws["center_y"]) + 0.2)[mask]
    assert r.min() >= 1.2 - 1e-9 and r.max() <= 1.6 + 1e-9
    # Uniform per unit area: the mean of r^2 is the midpoint of [r_in^2, r_out^2].
    assert (r**2).mean() == pytest.approx((1.2**2 + 1.6**2) / 2, rel=0.01)
    # Padding entries are all zero.
    for k in ("mass", "Rs", "alpha_Rs", "r_trunc", "center_x"):
        assert np.all(np.asarray(draws[k])[~mask] == 0) and np.all(np.asarray(draws[k])[mask] != 0)
    fixed = SubhaloPopulation(n_subhalos=3, radial="gaussian", ring_radius=2.0, width=0.1,
                              inject_mass=(1e9,), inject_x=(0.5,), inject_y=(-0.5,))  # fmt: skip
    d = jax.jit(jax.vmap(lambda k: sample_subhalos(k, fixed, 1.0)))(jax.random.split(key, 2000))
    assert np.asarray(d["mask"]).shape == (2000, 4) and np.all(np.asarray(d["mask"]))
    r = np.hypot(np.asarray(d["center_x"][:, :3]), np.asarray(d["center_y"][:, :3]))
    assert r.mean() == pytest.approx(2.0, abs=0.01) and r.std() == pytest.approx(0.1, rel=0.05)
    assert np.all(np.asarray(d["mass"][:, 3]) == 1e9) and np.all(
        np.asarray(d["center_x"][:, 3]) == 0.5
    )


def test_conversion_matches_lenstronomy(monkeypatch):
    import astropy.constants as ac
    import astropy.units as u
    import lenstronomy.Util.constants as const
    from astropy.cosmology import WMAP9, Planck18
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo
    from lenstronomy.Cosmo.nfw_param import NFWParam

    m = np.array([1e7, 3e8, 1e9, 1e10])
    c = np.array([18.0, 14.0, 12.0, 9.0])
    for cosmo, name, zl, zs in ((Planck18, "Planck18", 0.5, 2.0), (WMAP9, "WMAP9", 0.3, 1.1)):
        ref_rs, ref_a = LensCosmo(zl, zs, cosmo=cosmo).nfw_physical2angle(m, c)
        rs, a = tnfw_lensing_params(m, c, zl, zs, name)
        # lenstronomy's older G and M_sun shift alpha_Rs by ~3e-4.
        np.testing.assert_allclose(rs, ref_rs, rtol=1e-6)
        np.testing.assert_allclose(a, ref_a, rtol=1e-3)
        # With astropy's constants the two conversions agree to rounding.
        monkeypatch.setattr(const, "G", ac.G.value)
        monkeypatch.setattr(const, "M_sun", ac.M_sun.value)
        monkeypatch.setattr(const, "Mpc", u.Mpc.to(u.m))
        rhoc = (cosmo.critical_density0 / cosmo.h**2).to_value(u.Msun / u.Mpc**3)
        monkeypatch.setattr(NFWParam, "rhoc", rhoc)
        lc = LensCosmo(zl, zs, cosmo=cosmo)
        ref_rs, ref_a = lc.nfw_physical2angle(m, c)
        np.testing.assert_allclose(rs, ref_rs, rtol=1e-10)
        np.testing.assert_allclose(a, ref_a, rtol=1e-10)
        assert lensing_units(zl, zs, name).sigma_crit == pytest.approx(
            lc.sigma_crit_angle, rel=1e-10
        )
        monkeypatch.undo()


def test_mass_is_recovered_from_lensing_params():
    """M200 = 4 pi rho_s r_s^3 mu(c), with rho_s r_s = kappa_s Sigma_crit from alpha_Rs."""
    units = lensing_units(0.6, 1.8, "Planck15")
    m, c = np.array([1e8, 1e9, 1e10]), np.array([15.0, 12.0, 10.0])
    rs, a = tnfw_lensing_params(m, c, 0.6, 1.8, "Planck15")
    kappa_s = np.asarray(a) / (4 * np.asarray(rs) * (1 - np.log(2)))
    mu = np.log1p(c) - c / (1 + c)
    m_back = 4 * np.pi * kappa_s * units.sigma_crit * np.asarray(rs) ** 2 * mu
    np.testing.assert_allclose(m_back, m, rtol=1e-12)


def test_concentration_relation_and_tnfw_from_mass(key):
    halos = HaloConventions(z_lens=0.0001, z_source=1.0)
    h = 0.6766  # Planck18
    assert float(concentration(2e12 / h, halos)) == pytest.approx(5.71, rel=1e-4)
    assert float(concentration(2e10 / h, halos)) == pytest.approx(5.71 * 100**0.084, rel=1e-4)
    assert float(concentration(1e9, HaloConventions(concentration=15.0))) == 15.0
    pop = SubhaloPopulation(
        n_subhalos=0, tau=7.0, inject_mass=(2e9,), inject_x=(1.1,), inject_y=(0.4,)
    )
    d = sample_subhalos(key, pop, 2.0)
    p = tnfw_from_mass(2e9, 1.1, 0.4, pop.halos)
    for k in SUBHALO_PARAMS:
        assert float(p[k]) == pytest.approx(float(d[k][0]), rel=1e-12)
    assert float(p["r_trunc"]) == pytest.approx(7.0 * float(p["Rs"]))
    grad = jax.grad(lambda lm: tnfw_from_mass(10**lm, 1.1, 0.4, pop.halos)["alpha_Rs"])(9.3)
    assert np.isfinite(grad) and grad > 0


def test_halo_conventions_round_trip_through_header_cards():
    halos = HaloConventions(
        z_lens=0.3, z_source=1.5, cosmology="WMAP9", concentration=12.0, tau=8.0
    )
    cards = halos.header_cards()
    assert cards == {"Z_LENS": 0.3, "Z_SOURCE": 1.5, "COSMO": "WMAP9", "TAU": 8.0, "CONC": 12.0}
    assert HaloConventions.from_header(cards) == halos
    assert HaloConventions.from_header(cards, tau=None, z_source=3.0).z_source == 3.0
    assert HaloConventions.from_header({}) == HaloConventions()
    assert SubhaloPopulation(z_lens=0.3, z_source=1.5, tau=8.0).halos == HaloConventions(
        z_lens=0.3, z_source=1.5, tau=8.0
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z_lens": 1.0, "z_source": 1.0}, "z_source must be greater than z_lens"),
        ({"cosmology": "Planck99"}, "unknown cosmology 'Planck99'"),
        ({"concentration": -1.0}, "concentration must be >= 0, got -1.0"),
        ({"tau": 0.0}, "tau must be > 0, got 0.0"),
        ({"tau": float("nan")}, "tau must be > 0, got nan"),
    ],
)
def test_bad_halo_conventions_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        HaloConventions(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"m_min": 1e10, "m_max": 1e8}, "mass bounds reversed or non-positive"),
        ({"m_min": 0.0}, "mass bounds reversed or non-positive"),
        ({"m_min": -1e7}, "mass bounds reversed or non-positive"),
        ({"z_lens": 1.0, "z_source": 1.0}, "z_source must be greater than z_lens"),
        ({"z_lens": 2.5, "z_source": 1.0}, "z_source must be greater than z_lens"),
        ({"cosmology": "Planck99"}, "unknown cosmology 'Planck99'; choose one of WMAP1"),
        ({"inject_mass": (1e9,), "inject_x": (1.0,)}, "same length"),
        ({"n_subhalos": 5, "n_max": 3}, "n_max=3 is below n_subhalos=5"),
    ],
)
def test_bad_population_is_a_clear_error(kwargs, message):
    with pytest.raises(LensgenError, match=message.replace("(", r"\(")):
        SubhaloPopulation(**kwargs)


def test_bad_conversion_inputs():
    with pytest.raises(LensgenError, match="Planck18"):
        tnfw_lensing_params(1e9, 10.0, 0.5, 2.0, "planck")
    with pytest.raises(LensgenError, match="z_source must be greater"):
        tnfw_lensing_params(1e9, 10.0, 0.5, 0.4)
