"""Latent-flow cost: one jitted ``from_normal`` + its gradient, and ``log_prob`` + gradient.

``from_normal`` (z = f(u)) runs inside every gradient of u-space NUTS
(``lensgen/infer/model.py``); ``log_prob`` is what fitting (``fit-iaf``)
evaluates. Both are timed on a vmapped batch of ``--batch`` vectors (default 4)
with the shapes of the default source model (latent 16, 4 layers, 64 hidden),
random non-zero weights, float32. Prints the median over ``--repeats`` of the
mean time per call of ``--calls`` back-to-back calls (compilation excluded,
outputs blocked until ready).

To compare two versions of ``lensgen/source/flow.py`` run this script on each
and divide the medians.

Usage::

    python benchmarks/bench_flow.py [--batch 4] [--dim 16] [--layers 4] [--hidden 64]
                                    [--repeats 7] [--calls 200]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lensgen.source import flow  # noqa: E402


def random_flow(key: jax.Array, dim: int, n_layers: int, hidden: int) -> dict:
    """Flow parameters with every weight non-zero (``init_flow`` zeroes the last layer)."""
    p = flow.init_flow(key, dim, n_layers, hidden)
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, leaves)


def time_call(fn, arg, repeats: int, calls: int) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``fn(arg)``."""
    jax.block_until_ready(fn(arg))  # compile
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            r = fn(arg)
        jax.block_until_ready(r)
        out.append((time.perf_counter() - t0) / calls)
    return float(np.median(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()

    key = jax.random.key(0)
    p = random_flow(key, args.dim, args.layers, args.hidden)
    x = jax.random.normal(jax.random.fold_in(key, 2), (args.batch, args.dim), jnp.float32)

    def fwd(v):
        return flow.from_normal(p, v)

    def dens(v):
        return flow.log_prob(p, v)

    # The value and the gradient of a scalar of z, as NUTS needs for the potential.
    sample_grad = jax.jit(jax.vmap(jax.value_and_grad(lambda v: jnp.sum(jnp.sin(fwd(v))))))
    density_grad = jax.jit(jax.vmap(jax.value_and_grad(dens)))
    t_sample = time_call(sample_grad, x, args.repeats, args.calls)
    t_density = time_call(density_grad, x, args.repeats, args.calls)

    print(f"{platform.processor() or platform.machine()}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}; batch {args.batch}, latent {args.dim}, "
          f"{args.layers} layers, hidden {args.hidden}, float32")  # fmt: skip
    print(f"from_normal + grad: {t_sample * 1e6:9.1f} µs per call (median of {args.repeats})")
    print(f"log_prob + grad:    {t_density * 1e6:9.1f} µs per call (median of {args.repeats})")


if __name__ == "__main__":
    main()
