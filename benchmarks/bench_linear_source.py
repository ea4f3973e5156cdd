"""Cost of the marginalised sources' likelihood against the learned source's.

For each source model the script builds ``lensgen infer``'s problem on one simulated
observation (the seed case: SIS θ_E = 2.3″, learned source, ``--npix`` pixels over the
demo's field, supersampling 2, Gaussian PSF) and times one jitted call of the
potential (the negative log posterior, which holds the marginal likelihood) and of
its gradient, at prior draws, after compilation: median of ``--repeats`` batches of ``--calls`` calls.
``vae`` is the reference: its likelihood is one render of the decoded galaxy. The
marginalised sources integrate out K amplitudes per call (lensed basis images, their
Gram matrix and its Cholesky factor, :mod:`lensgen.infer.linear`): K = (n + 1)(n + 2)/2
for shapelets of order n, K = n² for an n × n pixel grid.

Run: ``python benchmarks/bench_linear_source.py [--npix 100] [--orders 8 12 16]
[--grids 16 20 40]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax

from lensgen.infer.demo import DemoConfig, simulate_seed_case
from lensgen.infer.mapfit import model_functions, prior_draws
from lensgen.infer.run import InferConfig, build_problem

CALLS = 20
"""Calls per timed batch (``--calls``)."""


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of one call (``repeats`` batches of ``CALLS`` calls, after a warm call)."""
    jax.block_until_ready(fn(*args))
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            out = fn(*args)
        jax.block_until_ready(out)
        batches.append((time.perf_counter() - t0) / CALLS)
    return statistics.median(batches)


def source_row(obs, source: str, n: int, repeats: int) -> tuple[float, float]:
    """(potential, potential + gradient) seconds for one source model of basis size n."""
    size = {"source_grid": n} if source.endswith("pixels") else {"shapelet_order": n}
    config = InferConfig(source=source, **size)
    problem = build_problem(config, obs)
    potential = model_functions(problem).potential
    x = jax.tree_util.tree_map(lambda a: a[0], prior_draws(jax.random.key(1), problem, 1))
    value = jax.jit(potential)
    grad = jax.jit(jax.value_and_grad(potential))
    return timed(value, x, problem.data, repeats=repeats), timed(
        grad, x, problem.data, repeats=repeats
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npix", type=int, default=100)
    parser.add_argument("--orders", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--grids", type=int, nargs="*", default=[16, 20, 40])
    parser.add_argument("--sources", nargs="+", default=["pixels", "vae+pixels", "shapelets"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args()
    globals()["CALLS"] = args.calls
    jax.config.update("jax_enable_x64", True)
    obs = simulate_seed_case(dataclasses.replace(DemoConfig(), npix=args.npix), seed=0)
    print(f"{args.npix}×{args.npix} px, supersampling {obs.supersample}, x64, "
          f"{jax.devices()[0].platform}")  # fmt: skip
    print("| source | K | potential ms | potential + gradient ms | ratio to vae |")
    print("|---|---|---|---|---|")
    ref = source_row(obs, "vae", 8, args.repeats)
    print(f"| vae | – | {ref[0] * 1e3:.2f} | {ref[1] * 1e3:.2f} | 1 |")
    for source in args.sources:
        grid = source.endswith("pixels")
        for n in args.grids if grid else args.orders:
            k = n * n if grid else (n + 1) * (n + 2) // 2
            v, g = source_row(obs, source, n, args.repeats)
            label = f"{source} {n}×{n}" if grid else f"{source} n_max={n}"
            print(
                f"| {label} | {k} | {v * 1e3:.1f} | {g * 1e3:.1f} | {g / ref[1]:.1f} |", flush=True
            )


if __name__ == "__main__":
    main()
