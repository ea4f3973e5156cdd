"""The VAE networks: convolutional encoder q(z|x) and DCGAN-style decoder.

Written with **Flax Linen** rather than NNX on purpose. The decoder is used far
from training, as the source light inside a lensing likelihood that NUTS
differentiates thousands of times; there we want exactly what Linen gives: a
pure function ``apply(params, z)`` of an immutable parameter pytree, with no
module state to split/merge around ``jit``/``grad``/``vmap``. The parameter
pytree is a nested dict of arrays, which also makes saving leaf by leaf (see
:mod:`lensgen.io.modeldir`) trivial. The networks have no batch statistics or
dropout, so NNX's mutable-state conveniences would buy nothing.

All functions here are written for ONE image or ONE latent vector; training
``jax.vmap``-s them. Images are in units of the global flux scale (see
:mod:`lensgen.source.train`); :class:`lensgen.source.model.SourceModel` returns
physical units.

References: Kingma & Welling 2013 (VAE); Radford et al. 2015 (DCGAN decoder:
strided transposed convolutions, no pooling, leaky ReLU in the encoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from lensgen.errors import ConfigError

DECODER_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "elu": nn.elu, "softplus": nn.softplus}
"""Nonlinearities the decoder may use (``Architecture.activation``)."""

# Bounds on log σ of q(z|x) keep exp() finite in float32 early in training.
_LOG_SIGMA_MIN, _LOG_SIGMA_MAX = -10.0, 3.0


@dataclass(frozen=True)
class Architecture:
    """What rebuilds the networks (stored in the model directory header).

    Attributes
    ----------
    image_shape : (H, W) in pixels; each must be divisible by ``2**len(channels)``.
    latent_dim : size of z.
    channels : feature maps per resolution level, finest first.
    dense : width of the fully connected layer after the encoder convolutions.
    activation : the decoder's nonlinearity, a key of :data:`DECODER_ACTIVATIONS`.
        ``"relu"`` is the DCGAN choice; the smooth ones make the decoded image a
        smooth function of z (on the seed case a GELU decoder did not make NUTS
        cheaper: BENCHMARKS.md, "Inference").
    """

    image_shape: tuple[int, int]
    latent_dim: int
    channels: tuple[int, ...]
    dense: int
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in DECODER_ACTIVATIONS:
            raise ConfigError(
                f"unknown decoder activation {self.activation!r}; "
                f"choose from {sorted(DECODER_ACTIVATIONS)}"
            )


class Encoder(nn.Module):
    """x (H, W) → (μ, log σ) of the diagonal Gaussian q(z|x), each (latent_dim,)."""

    arch: Architecture

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = x[..., None]
        for c in self.arch.channels:
            h = nn.Conv(c, (3, 3), padding="SAME")(h)
            h = nn.leaky_relu(h, 0.2)
            h = nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME")(h)
            h = nn.leaky_relu(h, 0.2)
        h = nn.leaky_relu(nn.Dense(self.arch.dense)(h.reshape(-1)), 0.2)
        mu = nn.Dense(self.arch.latent_dim)(h)
        log_sigma = nn.Dense(self.arch.latent_dim)(h)
        return mu, jnp.clip(log_sigma, _LOG_SIGMA_MIN, _LOG_SIGMA_MAX)


class Decoder(nn.Module):
    """z (latent_dim,) → galaxy image (H, W) before the PSF, in flux-scale units."""

    arch: Architecture

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        levels = len(self.arch.channels)
        h0, w0 = self.arch.image_shape[0] >> levels, self.arch.image_shape[1] >> levels
        act = DECODER_ACTIVATIONS[self.arch.activation]
        h = act(nn.Dense(self.arch.dense)(z))
        h = act(nn.Dense(h0 * w0 * self.arch.channels[-1])(h))
        h = h.reshape(h0, w0, self.arch.channels[-1])
        for c in reversed(self.arch.channels):
            h = act(nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME")(h))
        return nn.Conv(1, (3, 3), padding="SAME")(h)[..., 0]


class VAE(nn.Module):
    """Encoder + decoder under one parameter tree (``params/encoder``, ``params/decoder``)."""

    arch: Architecture

    def setup(self) -> None:
        self.encoder = Encoder(self.arch)
        self.decoder = Decoder(self.arch)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        mu, _ = self.encoder(x)
        return self.decoder(mu)

    def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.encoder(x)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        return self.decoder(z)


def init_params(key: jax.Array, arch: Architecture) -> dict:
    """Random float32 parameters ``{"params": {"encoder": …, "decoder": …}}``.

    Flax's default initialisation (LeCun normal: kernels drawn from a normal truncated
    at ±2σ with variance 1/fan_in, fan_in the product of all kernel axes but the
    output one; zero biases), drawn as one vector in one small compiled program: flax
    draws each kernel on its own, which compiles one sampler per kernel shape (about
    ten seconds for a small network on a CPU).
    """
    return _init_params(key, arch)


@partial(jax.jit, static_argnums=1)
def _init_params(key: jax.Array, arch: Architecture) -> dict:
    shapes = param_shapes(arch)
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    kernels = [math.prod(leaf.shape) for path, leaf in leaves if _is_kernel(path)]
    noise = jax.random.truncated_normal(key, -2.0, 2.0, (sum(kernels),), jnp.float32)
    # The standard deviation of a unit normal truncated at ±2.
    std_truncated = 0.87962566103423978
    out, start = [], 0
    for path, leaf in leaves:
        if not _is_kernel(path):
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
            continue
        size, fan_in = math.prod(leaf.shape), math.prod(leaf.shape[:-1])
        scale = 1.0 / (math.sqrt(fan_in) * std_truncated)
        out.append((noise[start : start + size] * scale).reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return jax.tree_util.tree_unflatten(tree, out)


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def param_shapes(arch: Architecture) -> dict:
    """Shapes/dtypes of the parameter tree without allocating it."""
    x = jax.ShapeDtypeStruct(arch.image_shape, jnp.float32)
    return jax.eval_shape(lambda k, x: VAE(arch).init(k, x), jax.random.key(0), x)


def encode(params: dict, arch: Architecture, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(μ, log σ) of q(z|x) for one image in flux-scale units."""
    return VAE(arch).apply(params, x.astype(jnp.float32), method=VAE.encode)


def decode(params: dict, arch: Architecture, z: jnp.ndarray) -> jnp.ndarray:
    """Pre-PSF galaxy (H, W) in flux-scale units for one latent vector."""
    return VAE(arch).apply(params, z.astype(jnp.float32), method=VAE.decode)


def decoder_apply(decoder_params: dict, arch: Architecture, z: jnp.ndarray) -> jnp.ndarray:
    """:func:`decode` from the decoder's own sub-tree (what SourceModel keeps)."""
    return Decoder(arch).apply({"params": decoder_params}, z.astype(jnp.float32))


def psf_convolve(image: jnp.ndarray, psf: jnp.ndarray) -> jnp.ndarray:
    """``image ⊛ psf`` with the output on the input grid (zero padding outside).

    The kernel's centre is pixel ``(h // 2, w // 2)`` (the GalSim/GREAT3 convention
    for even sizes). Computed by FFT on a grid padded to ``H + h - 1``.
    """
    H, W = image.shape
    h, w = psf.shape
    shape = (H + h - 1, W + w - 1)
    full = jnp.fft.irfft2(jnp.fft.rfft2(image, shape) * jnp.fft.rfft2(psf, shape), shape)
    return full[h // 2 : h // 2 + H, w // 2 : w // 2 + W].astype(image.dtype)


def odd_psf(psf: jnp.ndarray) -> jnp.ndarray:
    """Pad an even-sized square kernel by one zero row/column at the end.

    Keeps the centre at ``(k // 2, k // 2)`` and makes it the middle pixel, so 90°
    rotations and flips of the kernel (used with augmentation) turn it about its
    centre instead of shifting it by a pixel.
    """
    k = psf.shape[0]
    return jnp.pad(psf, ((0, 1 - k % 2), (0, 1 - k % 2)))


def dihedral(image: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
    """One of the 8 symmetries of the square: rotate by ``k % 4`` × 90°, flip if ``k >= 4``."""

    def branch(i: int):
        def f(a: jnp.ndarray) -> jnp.ndarray:
            a = jnp.rot90(a, i % 4)
            return a[:, ::-1] if i >= 4 else a

        return f

    return jax.lax.switch(k, [branch(i) for i in range(8)], image)
