"""Rendering throughput: lensgen (jitted single image, vmapped batch) vs lenstronomy.

Scene: SIE + SHEAR lens, SERSIC_ELLIPSE source, Gaussian PSF (FWHM 0.1"),
100 × 100 pixels of 0.05", supersampling 1 and 3, no supersampled convolution.
lenstronomy renders with ``ImageModel`` with the same kernel ('PIXEL' PSF); it
has no batching, so its batched rate is its single-image rate.

Prints median images/s over repeats (compile/warm-up excluded, outputs blocked
until ready) and the ratios lensgen / lenstronomy.

With ``--convolution`` it measures instead what the sub-pixel PSF convolution costs
(issue 13): the same scene with the issue's undersampled PSF (FWHM 0.06″
on 0.05″ pixels), one jitted image and one jitted gradient (``jax.value_and_grad``
of a weighted sum of the image over all lens and source parameters) per
``Scene.convolution``, ``"pixel"`` (pixel-level kernel after binning) and
``"subpixel"`` (kernel on sub-pixels before binning), next to lenstronomy's
``ImageModel`` with ``supersampling_convolution`` False and True.

Usage::

    python benchmarks/bench_render.py [--batch 256] [--chunk 0] [--devices 1] [--repeats 5] [--x64]
    python benchmarks/bench_render.py --convolution [--supersample 2 4] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _param_sets(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lens = [
            {
                "theta_E": rng.uniform(0.9, 1.5),
                "e1": rng.uniform(-0.2, 0.2),
                "e2": rng.uniform(-0.2, 0.2),
                "center_x": rng.uniform(-0.05, 0.05),
                "center_y": rng.uniform(-0.05, 0.05),
            },
            {"gamma1": rng.uniform(-0.05, 0.05), "gamma2": rng.uniform(-0.05, 0.05)},
        ]
        source = [
            {
                "amp": 10.0,
                "R_sersic": rng.uniform(0.1, 0.4),
                "n_sersic": rng.uniform(1.0, 4.0),
                "e1": rng.uniform(-0.3, 0.3),
                "e2": rng.uniform(-0.3, 0.3),
                "center_x": rng.uniform(-0.2, 0.2),
                "center_y": rng.uniform(-0.2, 0.2),
            }
        ]
        out.append({"lens": lens, "source": source})
    return out


def _rates(fns: dict, repeats: int, min_time: float = 0.3) -> dict[str, float]:
    """Median images/s of each ``fn`` in ``{name: (fn, n_images)}``; ``fn`` blocks.

    Each is called twice first (compilation, warm-up). The repeats interleave the
    contenders so that all of them see the same machine load.
    """
    loops = {}
    for name, (fn, _) in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        loops[name] = max(1, int(min_time / max(time.perf_counter() - start, 1e-9)))
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, n_images) in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            rates[name].append(loops[name] * n_images / (time.perf_counter() - start))
    return {name: float(np.median(r)) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npix", type=int, default=100)
    parser.add_argument("--pixel-scale", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--supersample", type=int, nargs="+", default=[1, 3])
    parser.add_argument(
        "--chunk",
        type=int,
        default=0,
        help="0: one jax.vmap over the whole batch; N: jax.lax.map in vmapped chunks of N",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="shard the batch over this many CPU devices (XLA runs one thread per device)",
    )
    parser.add_argument("--x64", action="store_true", help="render in float64 (default float32)")
    parser.add_argument(
        "--convolution",
        action="store_true",
        help="time the pixel vs the sub-pixel PSF convolution (render and gradient) instead",
    )
    parser.add_argument(
        "--psf",
        choices=["gaussian", "moffat"],
        default="gaussian",
        help="with --convolution: Gaussian (separable: matrix products) or Moffat β=3 (FFT)",
    )
    args = parser.parse_args()
    if args.convolution:
        if args.supersample == parser.get_default("supersample"):
            args.supersample = [2, 4]
        convolution_cost(args)
        return

    if args.devices > 1:
        # Must be set before jax is imported.
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from lensgen.lensing.instrument import gaussian_psf
    from lensgen.lensing.render import Scene, make_renderer

    dtype = jnp.float64 if args.x64 else jnp.float32
    n, scale = args.npix, args.pixel_scale
    kernel = gaussian_psf(fwhm=0.1, pixel_scale=scale)
    sets = _param_sets(args.batch)
    single = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), sets[0])
    batched = jax.tree_util.tree_map(lambda *v: jnp.asarray(np.stack(v), dtype), *sets)
    # The batch is split over a 1-D mesh of CPU devices (one device: no split).
    mesh = jax.make_mesh((args.devices,), ("batch",))
    spec = jax.sharding.PartitionSpec("batch")
    batched = jax.device_put(batched, jax.sharding.NamedSharding(mesh, spec))

    print(
        f"jax {jax.__version__} ({jax.default_backend()}), {platform.processor() or 'cpu'}, "
        f"{n}x{n} px, PSF {kernel.shape[0]}x{kernel.shape[0]}, batch {args.batch}, "
        f"{'float64' if args.x64 else 'float32'}, chunk {args.chunk or 'none'}, "
        f"batch devices {args.devices}, "
        f"repeats {args.repeats}"
    )
    header = (
        f"{'s':>2} {'lenstronomy':>12} {'lensgen 1':>10} {'lensgen batch':>14} "
        f"{'ratio 1':>8} {'ratio batch':>12}   (images/s)"
    )
    print(header)
    for s in args.supersample:
        scene = Scene(
            lens=("SIE", "SHEAR"),
            source=("SERSIC_ELLIPSE",),
            shape=(n, n),
            pixel_scale=scale,
            supersample=s,
        )
        render = make_renderer(scene, kernel)
        if args.chunk:
            local = partial(jax.lax.map, render, batch_size=args.chunk)
        else:
            local = jax.vmap(render)
        render_batch = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec))
        data = ImageData(
            image_data=np.zeros((n, n)),
            transform_pix2angle=np.diag([scale, scale]),
            ra_at_xy_0=-(n - 1) / 2 * scale,
            dec_at_xy_0=-(n - 1) / 2 * scale,
        )
        model = ImageModel(
            data,
            PSF(psf_type="PIXEL", kernel_point_source=kernel),
            lens_model_class=LensModel(["SIE", "SHEAR"]),
            source_model_class=LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics={"supersampling_factor": s, "supersampling_convolution": False},
        )
        rates = _rates(
            {
                "single": (lambda r=render: r(single).block_until_ready(), 1),
                "batch": (lambda r=render_batch: r(batched).block_until_ready(), args.batch),
                "ref": (lambda m=model: m.image(sets[0]["lens"], sets[0]["source"]), 1),
            },
            args.repeats,
        )
        r_single, r_batch, r_ref = rates["single"], rates["batch"], rates["ref"]
        print(
            f"{s:>2} {r_ref:>12.1f} {r_single:>10.1f} {r_batch:>14.1f} "
            f"{r_single / r_ref:>8.2f} {r_batch / r_ref:>12.2f}"
        )


def _lenstronomy_model(n: int, scale: float, s: int, kernel, supersampled: bool):
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    data = ImageData(
        image_data=np.zeros((n, n)),
        transform_pix2angle=np.diag([scale, scale]),
        ra_at_xy_0=-(n - 1) / 2 * scale,
        dec_at_xy_0=-(n - 1) / 2 * scale,
    )
    factor = s if supersampled else 1
    psf = PSF(
        psf_type="PIXEL", kernel_point_source=kernel, point_source_supersampling_factor=factor
    )
    return ImageModel(
        data,
        psf,
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": s, "supersampling_convolution": supersampled},
    )


def convolution_cost(args) -> None:
    """Milliseconds per image of the pixel and sub-pixel convolutions (issue 13)."""
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from lensgen.lensing.instrument import gaussian_psf, moffat_psf
    from lensgen.lensing.psf_supersampling import (
        gaussian_psf_supersampled,
        moffat_psf_supersampled,
    )
    from lensgen.lensing.render import Scene, make_renderer

    dtype = jnp.float64 if args.x64 else jnp.float32
    n, scale, fwhm = args.npix, args.pixel_scale, 0.06
    params = _param_sets(1)[0]
    single = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), params)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), dtype)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), {platform.processor() or 'cpu'}, "
        f'{n}x{n} px of {scale}", {args.psf} PSF FWHM {fwhm}", '
        f"{'float64' if args.x64 else 'float32'}, repeats {args.repeats}; ms per image"
    )
    print(
        f"{'s':>2} {'kernel px/sub':>13} {'render pix':>11} {'render sub':>11} {'ratio':>6} "
        f"{'grad pix':>9} {'grad sub':>9} {'ratio':>6} {'lt False':>9} {'lt True':>8}"
    )
    for s in args.supersample:
        if args.psf == "gaussian":
            kernels = {
                "pixel": gaussian_psf(fwhm, scale),
                "subpixel": gaussian_psf_supersampled(fwhm, scale, s),
            }
        else:
            kernels = {
                "pixel": moffat_psf(fwhm, 3.0, scale),
                "subpixel": moffat_psf_supersampled(fwhm, 3.0, scale, s),
            }
        fns = {}
        for mode, kernel in kernels.items():
            scene = Scene(
                lens=("SIE", "SHEAR"),
                source=("SERSIC_ELLIPSE",),
                shape=(n, n),
                pixel_scale=scale,
                supersample=s,
                convolution=mode,
            )
            render = make_renderer(scene, kernel)
            # The weights are an argument: as a constant, XLA would fold the backward
            # pass's products with them at compile time, which no likelihood allows.
            grad = jax.jit(jax.value_and_grad(lambda p, w, r=render: jnp.sum(w * r(p))))
            fns[f"render {mode}"] = (lambda r=render: r(single).block_until_ready(), 1)
            fns[f"grad {mode}"] = (lambda g=grad: jax.block_until_ready(g(single, weights)), 1)
        for supersampled in (False, True):
            model = _lenstronomy_model(
                n, scale, s, kernels["subpixel" if supersampled else "pixel"], supersampled
            )
            fns[f"lt {supersampled}"] = (
                lambda m=model: m.image(params["lens"], params["source"]),
                1,
            )
        ms = {name: 1e3 / rate for name, rate in _rates(fns, args.repeats).items()}
        print(
            f"{s:>2} {kernels['pixel'].shape[0]:>6}/{kernels['subpixel'].shape[0]:<6} "
            f"{ms['render pixel']:>11.2f} {ms['render subpixel']:>11.2f} "
            f"{ms['render subpixel'] / ms['render pixel']:>6.2f} "
            f"{ms['grad pixel']:>9.2f} {ms['grad subpixel']:>9.2f} "
            f"{ms['grad subpixel'] / ms['grad pixel']:>6.2f} "
            f"{ms['lt False']:>9.2f} {ms['lt True']:>8.2f}"
        )


if __name__ == "__main__":
    main()
