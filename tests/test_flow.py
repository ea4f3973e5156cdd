"""Latent flow: bijection, exact log-determinant, normalisation, fitting a known
non-Gaussian density (lensgen.source.flow, lensgen.source.fit.fit_flow)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensgen.source import flow
from lensgen.source.fit import FlowConfig, fit_flow


def _random_flow(key, dim, n_layers=3, hidden=16, scale=0.5):
    """A flow with every weight non-zero (init makes the last layer zero)."""
    p = flow.init_flow(key, dim, n_layers, hidden)
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        x + scale * jax.random.normal(k, x.shape, jnp.float32)
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, leaves)


def test_logdet_matches_autodiff_jacobian(key):
    # float64 (x64 is on in the tests): the Jacobian of 3 random layers is ill-conditioned.
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _random_flow(key, 5))
    fwd = jax.jit(lambda v: flow.to_normal(p, v))
    jacobian = jax.jit(jax.jacfwd(lambda v: flow.to_normal(p, v)[0]))
    for i in range(4):
        z = jax.random.normal(jax.random.fold_in(key, 10 + i), (5,), jnp.float64)
        u, logdet = fwd(z)
        jac = jacobian(z)
        sign, ref = np.linalg.slogdet(np.asarray(jac, np.float64))
        assert sign != 0
        assert float(logdet) == pytest.approx(ref, abs=1e-4)


def test_from_normal_inverts_to_normal(key):
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _random_flow(key, 6))
    z = jax.random.normal(key, (20, 6), jnp.float64)
    u = jax.jit(jax.vmap(lambda v: flow.to_normal(p, v)[0]))(z)
    back = jax.jit(jax.vmap(lambda v: flow.from_normal(p, v)))(u)
    np.testing.assert_allclose(back, z, atol=1e-9)
    # Gradients flow through the sequential inverse (used by u-space NUTS).
    g = jax.jit(jax.grad(lambda v: jnp.sum(flow.from_normal(p, v) ** 2)))(u[0])
    assert np.all(np.isfinite(np.asarray(g)))


def test_density_integrates_to_one(key):
    p = _random_flow(key, 2, scale=0.3)
    t = np.linspace(-12, 12, 481, dtype=np.float32)
    zz = jnp.asarray(np.stack(np.meshgrid(t, t), -1).reshape(-1, 2))
    dens = np.exp(np.asarray(jax.vmap(lambda v: flow.log_prob(p, v))(zz), np.float64))
    total = dens.sum() * (t[1] - t[0]) ** 2
    assert total == pytest.approx(1.0, abs=0.01)


def _banana(key, n):
    k1, k2 = jax.random.split(key)
    a = jax.random.normal(k1, (n,))
    b = 0.6 * a**2 - 0.6 + 0.35 * jax.random.normal(k2, (n,))
    return np.asarray(jnp.stack([a, b], 1), np.float32)


def test_flow_beats_gaussians_on_banana(key):
    z_tr, z_va = (
        _banana(jax.random.fold_in(key, 0), 3000),
        _banana(jax.random.fold_in(key, 1), 1000),
    )
    cfg = FlowConfig(n_layers=4, hidden=32, lr=3e-3, batch_size=250, max_epochs=120, patience=15)
    fit = fit_flow(key, z_tr, z_va, cfg)
    ll_flow = float(jnp.mean(jax.vmap(lambda v: flow.log_prob(fit.params, v))(jnp.asarray(z_va))))
    ll_std = float(jnp.mean(jax.vmap(flow.std_normal_log_prob)(jnp.asarray(z_va))))
    mean, cov = z_tr.mean(0), np.cov(z_tr.T)
    d = z_va - mean
    ll_gauss = float(np.mean(-0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
                             - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))))  # fmt: skip
    # True density's entropy is about -1.5 nats lower than the best Gaussian's here.
    assert ll_flow > ll_gauss + 0.25
    assert ll_flow > ll_std + 0.5
    # Samples reproduce the curved mean E[b | a] = 0.6 a² − 0.6.
    s = np.asarray(flow.sample(key, fit.params, 4000))
    inner = np.abs(s[:, 0]) < 0.5
    outer = np.abs(s[:, 0]) > 1.5
    assert s[outer, 1].mean() - s[inner, 1].mean() > 1.0
