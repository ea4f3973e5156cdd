"""Catalogue mode against single-lens invocations (issue 16): where the per-lens time goes.

Simulates ``--n`` lenses (SIE + shear, learned source, ``--npix``² pixels of 0.12″, the
repository's default model) as one ``lensgen simulate --n`` cube, then, each as a user
would type it in a fresh process:

1. ``lensgen infer cube.fits`` once (catalogue mode: one compiled problem);
2. ``lensgen infer lens_<i>.fits`` for the first ``--single`` lenses, one process each
   (each pays process start-up, tracing and compilation or a cache load).

Both use one fresh persistent compilation cache, warmed by nothing but these runs (so
the single runs after the catalogue load its programs instead of compiling: the saving
shown is what a user with a warm cache gets; ``--cold-singles`` gives each single run
an empty cache, as a first run on a new machine). Prints a Markdown table per lens
(catalogue time from ``catalogue.fits``, single wall time) and the stage timings.
Extra ``lensgen infer`` flags follow ``--``.

Run: ``python benchmarks/bench_catalogue.py --n 4 --single 2 [-- --target-ess 400]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

SCENE = """\
[[lens]]
type = "SIE"
theta_E = {{ uniform = [1.2, 1.8] }}
e1 = {{ normal = [0.0, 0.08] }}
e2 = {{ normal = [0.0, 0.08] }}
center_x = {{ normal = [0.0, 0.03] }}
center_y = {{ normal = [0.0, 0.03] }}

[[lens]]
type = "SHEAR"
gamma1 = {{ normal = [0.0, 0.03] }}
gamma2 = {{ normal = [0.0, 0.03] }}

[[source]]
type = "VAE"
flux = {{ uniform = [30.0, 80.0] }}
center_x = {{ uniform = [-0.15, 0.15] }}
center_y = {{ uniform = [-0.15, 0.15] }}
size = {{ lognormal = [-1.7, 0.2] }}

[instrument]
npix = {npix}
pixel_scale = 0.12
supersample = 2
psf = "gaussian"
psf_fwhm = 0.15

[noise]
exptime = 1000.0
background_rms = 0.05
"""


def _lensgen(*args: str, env: dict[str, str]) -> float:
    """Run ``lensgen ARGS`` in a fresh process; its wall time (s)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "lensgen", *args], env=env, text=True,
                         capture_output=True)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"lensgen {' '.join(args)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4, help="lenses in the catalogue")
    p.add_argument("--single", type=int, default=2, help="lenses also run one per process")
    p.add_argument("--npix", type=int, default=48)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cold-singles", action="store_true", help="empty cache per single run")
    p.add_argument("--keep", default="", help="keep the work folder here")
    args = p.parse_args(argv)
    from lensgen.io.fits import read_observations, write_observation

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_catalogue_"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "jax_cache"
    env = {**os.environ, "LENSGEN_JAX_CACHE": str(cache), "MPLBACKEND": "Agg"}
    (work / "scene.toml").write_text(SCENE.format(npix=args.npix))
    _lensgen("simulate", "--config", str(work / "scene.toml"), "--n", str(args.n), "--seed",
             str(args.seed), "--out", str(work / "cube.fits"), "--overwrite", env=env)  # fmt: skip
    cat_wall = _lensgen("infer", str(work / "cube.fits"), "--out", str(work / "catalogue"),
                        "--overwrite", *extra, env=env)  # fmt: skip
    table = Table.read(work / "catalogue" / "catalogue.fits")
    singles = []
    for i, obs in enumerate(read_observations(work / "cube.fits")[: args.single]):
        path = write_observation(work / f"lens_{i}.fits", obs, overwrite=True)
        single_env = env
        if args.cold_singles:
            shutil.rmtree(cache, ignore_errors=True)
            single_env = {**env, "LENSGEN_JAX_CACHE": str(work / f"jax_cache_{i}")}
        singles.append(_lensgen("infer", str(path), "--out", str(work / f"single_{i}"),
                                "--overwrite", *extra, env=single_env))  # fmt: skip
    times = np.asarray(table["time_s"], dtype=float)
    print(f"{args.n} lenses, {args.npix}×{args.npix} px, flags {' '.join(extra) or '(defaults)'}"
          f"; work folder {work}")  # fmt: skip
    print("\n| lens | catalogue (s) | single invocation (s) | compile (s) | MAP (s) | warm-up (s) "
          "| sampling (s) | steps/draw | min ESS | max R-hat |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")

    def col(name: str, i: int) -> str:
        if name not in table.colnames:
            return "–"
        value = float(np.ma.filled(table[name], np.nan)[i])
        return "–" if not np.isfinite(value) else f"{value:.3g}"

    for i in range(len(table)):
        single = f"{singles[i]:.1f}" if i < len(singles) else "–"
        print(f"| {table['id'][i]} | {times[i]:.1f} | {single} | {col('time_compile_s', i)} | "
              f"{col('time_map_s', i)} | {col('time_warmup_s', i)} | {col('time_sampling_s', i)} "
              f"| {col('mean_steps', i)} | {col('ess_min', i)} | {col('rhat_max', i)} |")  # fmt: skip
    amortised = cat_wall / args.n
    print(f"\ncatalogue process wall {cat_wall:.1f} s: {amortised:.1f} s per lens amortised "
          f"(first lens {times[0]:.1f} s, median of the rest "
          f"{np.median(times[1:]) if len(times) > 1 else float('nan'):.1f} s)")  # fmt: skip
    if singles:
        print(f"single invocations: median {np.median(singles):.1f} s per lens; ratio catalogue "
              f"amortised / single = {amortised / np.median(singles):.2f}")  # fmt: skip
    flags = [str(f) for f in table["flags"]]
    print(f"reached the ESS and R-hat targets: {sum('not_converged' not in f for f in flags)} "
          f"of {len(flags)}; failed: {sum('failed' in f for f in flags)}")  # fmt: skip


if __name__ == "__main__":
    main()
