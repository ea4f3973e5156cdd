"""Training throughput of the VAE (images/s) on the current JAX device.

Builds a synthetic 48×48 dataset (elliptical Gaussians ⊛ PSF + noise, as the
tests do), trains ``--epochs`` epochs of the given config's model and reports the
images/s of the epochs after the first (which includes compilation).

    python benchmarks/bench_train.py --config examples/default_model.toml --n 2048
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from source_data import blob_dataset  # noqa: E402

from lensgen.source.train import load_train_config, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/default_model.toml")
    ap.add_argument("--n", type=int, default=2048, help="stamps in the synthetic set")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        blob_dataset(Path(tmp) / "d.fits", n=args.n, size=args.size)
        overrides = {"data.path": str(Path(tmp) / "d.fits"), "train.epochs": args.epochs}
        cfg = load_train_config(args.config, overrides)
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", figures=False)
        wall = time.perf_counter() - t0
    rates = [h["images_per_s"] for h in res.history[1:]] or [res.history[0]["images_per_s"]]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(
        f"config: {args.config}, {args.n} stamps {args.size}x{args.size}, batch {cfg.train.batch_size}"
    )
    print(
        f"throughput: {sum(rates) / len(rates):.1f} images/s (epochs 2..{args.epochs}); wall {wall:.1f} s"
    )


if __name__ == "__main__":
    main()
