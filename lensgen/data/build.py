"""The ``download-great3`` workflow: branch tarball → selected stamps → dataset file.

:func:`build_great3_dataset` finds the branch tarball (or writes a synthetic one),
streams it through the safe extractor, cuts and measures the stamps of each
subfield as soon as its files are in, and stops reading once ``n_stamps`` stamps
pass the S/N cut or ``max_images`` images were read. The result is one dataset
file (:mod:`lensgen.io.dataset`) whose header also records the counts needed to
print the summary again (:func:`summary_lines`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from lensgen.data import stamps as st
from lensgen.data.great3 import (
    DEFAULT_BASE_URL,
    Manifest,
    SourceStream,
    default_cache_dir,
    parse_branch,
    resolve_tarball,
    sha256_file,
)
from lensgen.data.morphology import MORPHOLOGIES
from lensgen.data.synthetic import make_branch_tarball
from lensgen.data.tarstream import CorruptArchiveError, iter_subfields
from lensgen.errors import ConfigError, LensgenError
from lensgen.io.atomic import check_outputs
from lensgen.io.dataset import StampDataset, make_catalog, write_dataset
from lensgen.io.interrupt import check_interrupt, deferred_interrupt, interruptible


@dataclass(frozen=True)
class Great3Config:
    """Settings of ``lensgen download-great3`` (every field is a CLI flag).

    ``max_images=None`` reads images until ``n_stamps`` stamps are selected
    (``--synthetic`` then generates 3 images). ``cache_dir=""`` means
    :func:`lensgen.data.great3.default_cache_dir`. ``morphology`` is the galaxy
    population of a synthetic branch (:mod:`lensgen.data.morphology`).
    """

    branch: str = "control-ground-constant"
    base_url: str = DEFAULT_BASE_URL
    cache_dir: str = ""
    max_images: int | None = None
    n_stamps: int | None = 10_000
    snr_min: float = 15.0
    snr_max: float = 50.0
    val_fraction: float = 0.1
    seed: int = 0
    synthetic: bool = False
    synthetic_grid: int = 100
    morphology: str = "structured"
    retries: int = 5
    retry_wait: float = 1.0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parse_branch(self.branch)
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"max_images must be ≥ 1, got {self.max_images}")
        if self.n_stamps is not None and self.n_stamps < 1:
            raise ConfigError(f"n_stamps must be ≥ 1, got {self.n_stamps}")
        if not 0.0 <= self.snr_min < self.snr_max:
            raise ConfigError(f"need 0 ≤ snr_min < snr_max, got {self.snr_min}, {self.snr_max}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 2 <= self.synthetic_grid <= 100:
            raise ConfigError(f"synthetic_grid must be in 2…100, got {self.synthetic_grid}")
        if self.morphology not in MORPHOLOGIES:
            raise ConfigError(
                f"morphology must be one of {', '.join(MORPHOLOGIES)}, got {self.morphology!r}"
            )


@dataclass
class _Selection:
    stamps: list = dataclasses.field(default_factory=list)
    columns: list = dataclasses.field(default_factory=list)
    psfs: dict = dataclasses.field(default_factory=dict)
    counts: dict = dataclasses.field(
        default_factory=lambda: {"seen": 0, "low": 0, "high": 0, "bad": 0, "capped": 0}
    )
    images: int = 0

    @property
    def kept(self) -> int:
        return sum(len(s) for s in self.stamps)


def _process_subfield(files, branch, config: Great3Config, sel: _Selection) -> None:
    size = branch.stamp_size
    image = st.read_image(files.image, size)
    cat = st.read_galaxy_catalog(files.catalog)
    cut, i, j = st.cut_stamps(image, cat["x"], cat["y"], size, where=str(files.catalog.name))
    # GREAT3 noise has one variance per image: pooling the border estimates of all
    # stamps gives σ far more precisely than one 48 × 48 border can.
    border = st.border_sigma(cut, width=max(2, size // 6))
    sigma = np.full(len(cut), np.median(border[np.isfinite(border)]) if len(cut) else np.nan)
    snr = st.estimate_snr(cut, sigma)
    with fits.open(files.starfield, memmap=False) as hdul:
        star = next((h.data for h in hdul if h.data is not None), None)
    if star is None:
        raise LensgenError(f"{files.starfield}: no image data")
    sel.psfs[files.subfield] = st.psf_from_starfield(np.asarray(star, np.float64), size)
    pair = st.pair_ids(files.subfield, i, j, image.shape[1] // size, branch.has_pairs)
    bad = ~np.isfinite(snr) | ~np.isfinite(cut).all(axis=(1, 2))
    low = ~bad & (snr < config.snr_min)
    high = ~bad & (snr > config.snr_max)
    keep = np.flatnonzero(~(bad | low | high))
    room = None if config.n_stamps is None else config.n_stamps - sel.kept
    counts = sel.counts
    counts["seen"] += len(cut)
    counts["bad"] += int(bad.sum())
    counts["low"] += int(low.sum())
    counts["high"] += int(high.sum())
    if room is not None and len(keep) > room:
        counts["capped"] += len(keep) - room
        keep = keep[:room]
    sel.stamps.append(np.array(cut[keep], dtype=np.float32))
    sel.columns.append(
        {
            "subfield": np.full(len(keep), files.subfield, np.int32),
            "id": cat["id"][keep],
            "x": cat["x"][keep],
            "y": cat["y"][keep],
            "sigma": sigma[keep],
            "snr": snr[keep],
            "pair": pair[keep],
        }
    )
    sel.images += 1


def _tarball(config: Great3Config, cache: Path, manifest: Manifest, on_status) -> tuple[str, Path]:
    branch = parse_branch(config.branch)
    if config.synthetic:
        import jax

        # The population is part of the name: a cached branch of the other one is not reused.
        name = f"grid{config.synthetic_grid}-seed{config.seed}-{config.morphology}"
        folder = cache / "synthetic" / name
        n_images = config.max_images or 3
        target = folder / f"{branch.name}.tar.gz"
        entry = manifest.get(f"synthetic/{folder.name}/{target.name}")
        if not (target.is_file() and entry and entry.get("images", 0) >= n_images):
            on_status(f"writing a synthetic {branch.name} branch ({n_images} images)")
            try:
                make_branch_tarball(
                    jax.random.key(config.seed),
                    folder,
                    branch,
                    n_images,
                    config.synthetic_grid,
                    config.morphology,
                )
            except OSError as exc:
                raise LensgenError(f"cannot write a synthetic branch into {folder}: "
                                   f"{exc.strerror or exc}") from None  # fmt: skip
            size, digest = sha256_file(target)
            manifest.record(
                f"synthetic/{folder.name}/{target.name}",
                url=target.resolve().as_uri(),
                size=size,
                sha256=digest,
                images=n_images,
                complete=True,
            )
        return str(target), cache / f"{branch.name}.tar.gz"
    entry = manifest.get(f"{branch.name}.tar.gz")
    if entry and entry.get("url") and entry["url"].startswith(config.base_url.rstrip("/")):
        return entry["url"], cache / f"{branch.name}.tar.gz"
    on_status(f"looking for {branch.name}.tar.gz at {config.base_url}")
    with interruptible():  # network only: Ctrl-C need not wait for a timeout
        url = resolve_tarball(config.base_url, branch, config.timeout)
    return url, cache / f"{branch.name}.tar.gz"


def build_great3_dataset(
    config: Great3Config,
    output: str | Path,
    overwrite: bool = False,
    on_bytes: Callable[[int, int | None], None] | None = None,
    on_status: Callable[[str], None] = lambda message: None,
) -> StampDataset:
    """Download (or generate) a GREAT3 branch and write the selected stamps to ``output``.

    Parameters
    ----------
    config : Great3Config
        Branch, source, cuts and split.
    output : path
        Dataset file (FITS), written atomically.
    overwrite : bool
        Replace an existing ``output``.
    on_bytes : callable(done, total), optional
        Progress of the tarball stream, bytes.
    on_status : callable(str), optional
        One-line status messages.
    """
    check_outputs([output], overwrite)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    check_cache_dir(cache)
    with deferred_interrupt():
        return _build(config, Path(output), overwrite, cache, on_bytes, on_status)


def check_cache_dir(cache: Path) -> None:
    """Refuse a cache folder that is a file, or under one, before anything is written."""
    if cache.exists() and not cache.is_dir():
        raise LensgenError(f"--cache-dir {cache} is a file, not a folder")
    parent = next((p for p in cache.parents if p.exists()), Path("."))
    if not cache.exists() and not parent.is_dir():
        raise LensgenError(f"cannot create cache folder {cache}: {parent} is a file")


def _build(config, output, overwrite, cache, on_bytes, on_status) -> StampDataset:
    branch = parse_branch(config.branch)
    manifest = Manifest(cache)
    url, cache_file = _tarball(config, cache, manifest, on_status)
    try:  # only once the source is known: a bad --base-url leaves no empty cache behind
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LensgenError(f"cannot create cache folder {cache}: {exc.strerror or exc}") from None
    http = url.startswith(("http://", "https://"))
    known = None
    key = f"{branch.name}.tar.gz"
    if http and cache_file.exists():
        entry = manifest.get(key)
        size, digest = sha256_file(cache_file)
        if entry is None or (entry["size"], entry["sha256"]) != (size, digest):
            raise LensgenError(
                f"cached download {cache_file} does not match its manifest entry "
                f"(size {size}, sha256 {digest[:12]}…); delete it to download again"
            )
        known = size if entry.get("complete") else None
    elif http:
        manifest.entries.pop(key, None)
    stream = SourceStream(
        url,
        cache_file if http else None,
        config.retries,
        config.retry_wait,
        config.timeout,
        on_bytes,
        known_total=known,
    )
    sel = _Selection()
    extracted = []
    corrupt = False
    try:
        for files in iter_subfields(stream, cache / branch.name, url):
            check_interrupt()
            _process_subfield(files, branch, config, sel)
            extracted.extend(
                {"name": name, "url": url, "size": s, "sha256": h}
                for name, (s, h) in files.checksums.items()
            )
            on_status(f"subfield {files.subfield:03d}: {sel.kept} stamps selected")
            full = config.n_stamps is not None and sel.kept >= config.n_stamps
            if full or (config.max_images is not None and sel.images >= config.max_images):
                break
    except CorruptArchiveError:
        corrupt = True  # resuming a damaged download would only repeat the damage
        raise
    finally:
        stream.close()
        if http and corrupt:
            cache_file.unlink(missing_ok=True)
            manifest.entries.pop(key, None)
        elif http and cache_file.exists():
            # The cache may hold more than this run read (an earlier, longer run).
            size, digest = sha256_file(cache_file)
            manifest.record(
                key,
                url=url,
                size=size,
                sha256=digest,
                complete=stream.complete or known is not None,
            )
        for item in extracted:
            manifest.record(f"{branch.name}/{item['name']}", **item)
        manifest.save()
    if sel.images == 0:
        raise LensgenError(f"{url}: no complete subfield (image, catalogue, starfield) found")
    if sel.kept == 0:
        raise LensgenError(
            f"no stamp has {config.snr_min} ≤ S/N ≤ {config.snr_max} in {sel.images} image(s); "
            "widen --snr-min/--snr-max or read more images"
        )
    cols = {k: np.concatenate([c[k] for c in sel.columns]) for k in sel.columns[0]}
    cols["split"] = st.split_pairs(cols["pair"], config.val_fraction, config.seed)
    first = min(sel.psfs)
    source = {"name": Path(url).name, "url": url, "size": stream.position, "sha256": stream.sha256}
    counts = sel.counts
    meta = {
        "BRANCH": branch.name,
        "SNRMIN": config.snr_min,
        "SNRMAX": config.snr_max,
        "NSEEN": counts["seen"],
        "NLOWSNR": counts["low"],
        "NHIGHSNR": counts["high"],
        "NBAD": counts["bad"],
        "NCAPPED": counts["capped"],
        "NIMAGES": sel.images,
        "PSFSUB": first,
        "SEED": config.seed,
        "VALFRAC": config.val_fraction,
        "SYNTHET": config.synthetic,
        **({"MORPHOL": config.morphology} if config.synthetic else {}),
        "SRCURL": url,
    }
    ds = StampDataset(
        stamps=np.concatenate(sel.stamps),
        catalog=make_catalog(len(cols["pair"]), **cols),
        pixel_scale=branch.pixel_scale,
        psf=sel.psfs[first],
        meta=meta,
        sources=[source, *extracted],
    )
    check_interrupt()  # the last moment at which the output is untouched
    write_dataset(output, ds, overwrite=overwrite)
    return ds


def summary_lines(ds: StampDataset, bins: int = 10) -> list[str]:
    """Counts kept and cut, and an S/N histogram of the kept stamps (text lines)."""
    m = {k.upper(): v for k, v in ds.meta.items()}
    n_train, n_val = len(ds.split_indices("train")), len(ds.split_indices("val"))
    lines = [
        f"branch {m.get('BRANCH', '?')}, {m.get('NIMAGES', '?')} image(s), "
        f"pixel scale {ds.pixel_scale}″, stamps {ds.image_shape[0]} × {ds.image_shape[1]}",
        f"stamps seen {m.get('NSEEN', '?')}: kept {len(ds)} (train {n_train}, val {n_val}); "
        f"cut S/N < {m.get('SNRMIN', '?')}: {m.get('NLOWSNR', '?')}, "
        f"S/N > {m.get('SNRMAX', '?')}: {m.get('NHIGHSNR', '?')}, "
        f"unusable: {m.get('NBAD', '?')}, over --n-stamps: {m.get('NCAPPED', '?')}",
    ]
    snr = np.asarray(ds.catalog["snr"], float)
    if len(snr):
        lo, hi = float(m.get("SNRMIN", snr.min())), float(m.get("SNRMAX", snr.max()))
        counts, edges = np.histogram(snr, bins=bins, range=(lo, hi))
        width = 40 / max(counts.max(), 1)
        lines.append("S/N histogram:")
        for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            lines.append(f"  {a:6.1f}–{b:6.1f} {c:7d} {'█' * int(round(c * width))}")
    return lines
