"""Benchmark: extract and select the 10,000 stamps of one 4800 × 4800 GREAT3 image.

Writes a one-subfield synthetic branch tarball (not timed; ``control-ground-constant``
by default, ``--branch multiepoch-ground-constant`` for the 6-epoch coadd), then
times the streamed read → safe extraction → (coadd) → stamp cutting → σ and S/N →
PSF → selection → dataset file, exactly as ``lensgen download-great3`` runs it, and
reports the peak resident memory of the process. One subfield cannot hold a
leak-free validation split, so the benchmark keeps every stamp for training.

    python benchmarks/bench_stamps.py [--grid 100] [--branch B] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax

from lensgen.data.build import Great3Config, build_great3_dataset
from lensgen.data.great3 import parse_branch
from lensgen.data.synthetic import make_branch_tarball


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=100, help="stamps per image side")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument("--branch", default="control-ground-constant", help="GREAT3 branch")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_stamps_"))
    work.mkdir(parents=True, exist_ok=True)
    branch = parse_branch(args.branch)
    tarball = work / "src" / f"{branch.name}.tar.gz"
    if not tarball.is_file():
        t0 = time.perf_counter()
        make_branch_tarball(jax.random.key(0), tarball.parent, branch, 1, grid=args.grid)
        print(f"synthetic image written in {time.perf_counter() - t0:.1f} s (not timed)")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = work / "ds.fits"
    out.unlink(missing_ok=True)
    config = Great3Config(
        branch=branch.name,
        base_url=str(tarball),
        cache_dir=str(work / "cache"),
        max_images=1,
        n_stamps=None,
        val_fraction=0.0,
    )
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    ds = build_great3_dataset(config, out)
    elapsed = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds are what a shared machine cannot inflate: wall time also counts
    # time spent waiting for a core.
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seen = ds.meta["NSEEN"]
    print(f"tarball {tarball.stat().st_size / 1e6:.1f} MB; stamps seen {seen}, kept {len(ds)}")
    print(f"extract + select + write: {elapsed:.2f} s wall, {cpu:.2f} s CPU")
    print(f"peak RSS {rss:.0f} MiB (before the timed step: {rss_before:.0f} MiB)")
    print(f"python {sys.version.split()[0]}, jax {jax.__version__}")


if __name__ == "__main__":
    main()
