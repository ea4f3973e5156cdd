"""Subhalo deflection cost: K truncated-NFW subhalos on a 100 × 100 image.

Part 1: ``subhalos_deflection`` jitted for K = 10, 100, 1000, 3000 subhalos (one
compilation per K): compile time and median run time. Part 2: one function compiled
for a padded K_max, called with 10 … K_max real subhalos (the rest alpha_Rs = 0):
one compilation serves every count, and its run time is set by K_max.

Subhalo masses from dN/dm ∝ m^-1.9 on [1e7, 1e10] M☉ around a 1.2" ring (z_lens 0.5,
z_source 2, Planck18); float32 unless --x64. Times are medians over repeats with
outputs blocked until ready.

Usage::

    python benchmarks/bench_subhalos.py [--npix 100] [--k 10 100 1000 3000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npix", type=int, default=100)
    parser.add_argument("--pixel-scale", type=float, default=0.05)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000, 3000])
    parser.add_argument("--k-max", type=int, default=1000, help="padded size for part 2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--x64", action="store_true", help="float64 (default float32)")
    args = parser.parse_args()

    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from lensgen.lensing.grid import pixel_grid
    from lensgen.lensing.substructure import SUBHALO_PARAMS, subhalos_deflection
    from lensgen.simulate.population import SubhaloPopulation, sample_subhalos

    dtype = jnp.float64 if args.x64 else jnp.float32
    x, y = (jnp.asarray(c, dtype) for c in pixel_grid((args.npix, args.npix), args.pixel_scale))

    def population(k: int) -> dict:
        pop = SubhaloPopulation(n_subhalos=k, width=0.5)
        draw = sample_subhalos(jax.random.key(k), pop, 1.2)
        return {name: jnp.asarray(draw[name], dtype) for name in SUBHALO_PARAMS}

    print(
        f"jax {jax.__version__} ({jax.default_backend()}, {jax.devices()[0].device_kind}), "
        f"{platform.processor() or platform.machine()}, {args.npix}x{args.npix} px, "
        f"{'float64' if args.x64 else 'float32'}, repeats {args.repeats}"
    )
    print("part 1: one compilation per K")
    print(f"{'K':>6} {'compile [s]':>12} {'run [ms]':>10} {'per subhalo [us]':>17}")
    for k in args.k:
        params = population(k)
        fn = jax.jit(subhalos_deflection)
        start = time.perf_counter()
        compiled = fn.lower(x, y, **params).compile()
        t_compile = time.perf_counter() - start
        t_run = _median_time(lambda c=compiled, p=params: jax.block_until_ready(c(x, y, **p)),
                             args.repeats)  # fmt: skip
        print(f"{k:>6} {t_compile:>12.2f} {t_run * 1e3:>10.2f} {t_run / k * 1e6:>17.2f}")

    print(f"part 2: one function padded to K_max = {args.k_max}")
    print(f"{'real K':>6} {'first call [s]':>15} {'run [ms]':>10} {'compilations':>13}")
    fn = jax.jit(subhalos_deflection)
    full = population(args.k_max)
    for k in sorted({10, 100, args.k_max // 2, args.k_max}):
        # Keep the first k subhalos; pad the rest with alpha_Rs = 0.
        keep = jnp.arange(args.k_max) < k
        params = {**full, "alpha_Rs": jnp.where(keep, full["alpha_Rs"], 0.0).astype(dtype)}
        start = time.perf_counter()
        jax.block_until_ready(fn(x, y, **params))
        t_first = time.perf_counter() - start
        t_run = _median_time(lambda p=params: jax.block_until_ready(fn(x, y, **p)), args.repeats)
        print(f"{k:>6} {t_first:>15.2f} {t_run * 1e3:>10.2f} {fn._cache_size():>13}")


if __name__ == "__main__":
    main()
