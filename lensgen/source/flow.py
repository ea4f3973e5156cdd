"""Autoregressive flow for the VAE's latent prior (MADE layers + reversals).

Each layer is an affine autoregressive bijection whose shift μ_i and log-scale
α_i depend only on the earlier coordinates, computed for all i at once by a
masked network (MADE, Germain et al. 2015):

    u_i = (z_i − μ_i(z_<i)) · exp(−α_i(z_<i)),   log |det ∂u/∂z| = −Σ_i α_i.   (1)

**Direction.** The network is conditioned on the *data-side* variable z. Then
the density of a latent, log p(z) = log N(u(z); 0, I) − Σ_layers Σ_i α_i, takes
ONE pass of each MADE, which is what fitting by maximum likelihood on the
encoded training latents (and ``prior_log_prob`` inside NUTS) evaluates. This is
the inverse autoregressive flow of Kingma et al. (2016) run from data to noise
(a.k.a. the masked autoregressive flow, Papamakarios et al. 2017); the other
direction, z = T(u) for sampling and u-space NUTS, inverts (1) coordinate by
coordinate in ``dim`` sequential passes (a ``lax.fori_loop``). The coordinate
order is reversed between layers so every coordinate conditions on every other.

A leading element-wise affine map (``loc``, ``log_scale``, set from the data
before fitting) standardises the latents. All functions take ONE vector and
compute in the promoted dtype of the vector and the (float32) parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ALPHA_BOUND = 3.0  # |α| ≤ 3 per layer keeps exp(α) finite early in fitting


def _masks(dim: int, hidden: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MADE masks for input → hidden → hidden → (μ, α) with degrees 1..dim."""
    deg_in = np.arange(1, dim + 1)
    deg_h = np.arange(hidden) % max(dim - 1, 1) + 1
    m1 = (deg_h[None, :] >= deg_in[:, None]).astype(np.float32)
    m2 = (deg_h[None, :] >= deg_h[:, None]).astype(np.float32)
    m3 = (deg_in[None, :] > deg_h[:, None]).astype(np.float32)
    return m1, m2, np.concatenate([m3, m3], axis=1)


def init_flow(key: jax.Array, dim: int, n_layers: int, hidden: int) -> dict:
    """Parameters of an identity-at-start flow (last MADE layer zero), float32."""
    layers = []
    for k in jax.random.split(key, n_layers):
        k1, k2 = jax.random.split(k)
        layers.append({
            "w1": jax.random.normal(k1, (dim, hidden), jnp.float32) / math.sqrt(dim),
            "b1": jnp.zeros(hidden, jnp.float32),
            "w2": jax.random.normal(k2, (hidden, hidden), jnp.float32) / math.sqrt(hidden),
            "b2": jnp.zeros(hidden, jnp.float32),
            "w3": jnp.zeros((hidden, 2 * dim), jnp.float32),
            "b3": jnp.zeros(2 * dim, jnp.float32),
        })  # fmt: skip
    zeros = jnp.zeros(dim, jnp.float32)
    return {"loc": zeros, "log_scale": zeros, "layers": layers}


def param_shapes(dim: int, n_layers: int, hidden: int) -> dict:
    """Shapes/dtypes of :func:`init_flow`'s tree without allocating it."""
    return jax.eval_shape(lambda k: init_flow(k, dim, n_layers, hidden), jax.random.key(0))


def _made(layer: dict, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    dim, hidden = layer["w1"].shape
    m1, m2, m3 = _masks(dim, hidden)
    h = jax.nn.gelu(z @ (layer["w1"] * m1) + layer["b1"])
    h = jax.nn.gelu(h @ (layer["w2"] * m2) + layer["b2"])
    out = h @ (layer["w3"] * m3) + layer["b3"]
    mu, raw = out[:dim], out[dim:]
    return mu, _ALPHA_BOUND * jnp.tanh(raw / _ALPHA_BOUND)


def to_normal(params: dict, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """u = T⁻¹(z) and log |det ∂u/∂z| for one latent vector (one pass per layer)."""
    h = (z - params["loc"]) * jnp.exp(-params["log_scale"])
    logdet = -jnp.sum(params["log_scale"])
    for layer in params["layers"]:
        mu, alpha = _made(layer, h)
        h = ((h - mu) * jnp.exp(-alpha))[::-1]
        logdet = logdet - jnp.sum(alpha)
    return h, logdet


def from_normal(params: dict, u: jnp.ndarray) -> jnp.ndarray:
    """z = T(u): inverts :func:`to_normal`, ``dim`` sequential MADE passes per layer."""
    h = jnp.asarray(u)
    dim = h.shape[0]
    for layer in reversed(params["layers"]):
        target = h[::-1]

        def body(_, x, layer=layer, target=target):
            mu, alpha = _made(layer, x)
            return target * jnp.exp(alpha) + mu

        # After i passes the first i coordinates are exact (autoregressive order).
        h = jax.lax.fori_loop(0, dim, body, jnp.zeros_like(target))
    return h * jnp.exp(params["log_scale"]) + params["loc"]


def std_normal_log_prob(z: jnp.ndarray) -> jnp.ndarray:
    """log N(z; 0, I) for one vector."""
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)


def log_prob(params: dict, z: jnp.ndarray) -> jnp.ndarray:
    """log p(z) under the flow, eq. (1) + change of variables; scalar for one z."""
    u, logdet = to_normal(params, z)
    return std_normal_log_prob(u) + logdet


def sample(key: jax.Array, params: dict, n: int) -> jnp.ndarray:
    """(n, dim) draws z = T(u), u ~ N(0, I)."""
    dim = params["loc"].shape[0]
    u = jax.random.normal(key, (n, dim), jnp.float32)
    return jax.vmap(lambda v: from_normal(params, v))(u)
