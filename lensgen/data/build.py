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
from lensgen.lensing.psf_supersampling import kernel_fwhm


@dataclass(frozen=True)
class Great3Config:
    """Settings of ``lensgen download-great3`` (every field is a CLI flag).

    ``max_images=None`` reads subfields until ``n_stamps`` stamps are selected
    (``--synthetic`` then generates 3 subfields). ``cache_dir=""`` means
    :func:`lensgen.data.great3.default_cache_dir`. ``morphology`` is the galaxy
    population of a synthetic branch (:mod:`lensgen.data.morphology`). ``rebin``
    sums rebin × rebin pixel blocks; ``None`` means 2 for the 0.05″ single-epoch
    space branches (96 × 96 stamps become 48 × 48 of 0.1″) and 1 otherwise.

    The default branch is ``real_galaxy-space-constant``: real COSMOS galaxies
    (clumps, arms, irregulars) seen through a space PSF, which is what a lensed
    source looks like once a lens has magnified it; ``control-ground-constant``
    holds parametric galaxies blurred by 0.5–0.95″ seeing.
    """

    branch: str = "real_galaxy-space-constant"
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
    rebin: int | None = None
    retries: int = 5
    retry_wait: float = 1.0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        branch = parse_branch(self.branch)
        if not branch.constant_psf:
            raise ConfigError(
                f"branch {self.branch} has a PSF that varies over the field, which lensgen "
                "does not model; use a constant-PSF branch: control-*, real_galaxy-* or "
                "multiepoch-*"
            )
        if self.rebin is not None and (self.rebin < 1 or branch.stamp_size % self.rebin):
            raise ConfigError(
                f"rebin must divide the {branch.stamp_size}-pixel stamps of {self.branch}, "
                f"got {self.rebin}"
            )
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
        if self.max_images == 1 and self.val_fraction > 0:
            raise ConfigError(
                "max_images = 1 leaves no subfield for a leak-free validation set (rotated "
                "twins are scattered over a subfield); read ≥ 2 images or set val_fraction = 0"
            )
        if self.morphology not in MORPHOLOGIES:
            raise ConfigError(
                f"morphology must be one of {', '.join(MORPHOLOGIES)}, got {self.morphology!r}"
            )


def resolved_rebin(config: Great3Config) -> int:
    """The pixel-block size of ``config`` (``None`` → 2 for 0.05″ space stamps, else 1)."""
    if config.rebin is not None:
        return config.rebin
    branch = parse_branch(config.branch)
    return 2 if branch.stamp_size == 96 else 1


@dataclass
class _Subfield:
    """The stamps of one subfield that passed the S/N cut, and its PSF."""

    number: int
    stamps: np.ndarray
    columns: dict
    psf: np.ndarray


@dataclass
class _Selection:
    subfields: list = dataclasses.field(default_factory=list)
    counts: dict = dataclasses.field(
        default_factory=lambda: {"seen": 0, "low": 0, "high": 0, "bad": 0, "capped": 0}
    )

    @property
    def images(self) -> int:
        return len(self.subfields)

    @property
    def passed(self) -> int:
        return sum(len(s.stamps) for s in self.subfields)


def read_dither(path: Path) -> tuple[float, float]:
    """(dx, dy) in pixels from ``epoch_dither-SSS-E.txt``."""
    try:
        values = np.loadtxt(path, comments="#", ndmin=1).ravel()
    except (OSError, ValueError) as exc:
        raise LensgenError(f"{path}: cannot read the epoch dither: {exc}") from None
    if values.size != 2 or not np.all(np.isfinite(values)):
        raise LensgenError(f"{path}: expected one row 'dx dy', got {values.size} value(s)")
    return float(values[0]), float(values[1])


def _read_star(path: Path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        star = next((h.data for h in hdul if h.data is not None), None)
    if star is None:
        raise LensgenError(f"{path}: no image data")
    return np.asarray(star, np.float64)


def _subfield_data(files, branch) -> tuple[np.ndarray, np.ndarray]:
    """The subfield's galaxy image and its lower-left star stamp (epochs coadded).

    Multi-epoch images are moved back by their dithers and summed
    (:func:`lensgen.data.stamps.coadd`); the coadd's PSF is the mean of the epochs'
    unit-flux stars, which GREAT3 draws undithered at the stamp centre.
    """
    size = branch.stamp_size
    epochs = sorted(files.images)
    if len(epochs) == 1:
        return st.read_image(files.images[0], size), _read_star(files.starfields[0])[:size, :size]
    dithers = [read_dither(files.dithers[e]) for e in epochs]
    try:
        image = st.coadd((st.read_image(files.images[e], size) for e in epochs), dithers)
    except LensgenError as exc:
        raise LensgenError(f"subfield {files.subfield:03d}: {exc}") from None
    stars = []
    for e in epochs:
        star = _read_star(files.starfields[e])[:size, :size]
        if not star.sum() > 0:
            raise LensgenError(f"{files.starfields[e]}: the lower-left PSF stamp has no flux")
        stars.append(star / star.sum())
    return image, np.mean(stars, axis=0)


def _process_subfield(files, branch, config: Great3Config, sel: _Selection) -> None:
    size = branch.stamp_size
    factor = resolved_rebin(config)
    image, star = _subfield_data(files, branch)
    cat = st.read_galaxy_catalog(files.catalog)
    cut, _, _ = st.cut_stamps(image, cat["x"], cat["y"], size, where=str(files.catalog.name))
    cut = st.rebin(cut, factor)
    psf = st.psf_from_starfield(st.rebin(star, factor), size // factor)
    # GREAT3 noise has one variance per image: pooling the border estimates of all
    # stamps gives σ far more precisely than one 48 × 48 border can.
    small = size // factor
    border = st.border_sigma(cut, width=max(2, small // 6))
    sigma = np.full(len(cut), np.median(border[np.isfinite(border)]) if len(cut) else np.nan)
    snr = st.estimate_snr(cut, sigma)
    bad = ~np.isfinite(snr) | ~np.isfinite(cut).all(axis=(1, 2))
    low = ~bad & (snr < config.snr_min)
    high = ~bad & (snr > config.snr_max)
    keep = np.flatnonzero(~(bad | low | high))
    counts = sel.counts
    counts["seen"] += len(cut)
    counts["bad"] += int(bad.sum())
    counts["low"] += int(low.sum())
    counts["high"] += int(high.sum())
    if config.n_stamps is not None and len(keep) > config.n_stamps:
        counts["capped"] += len(keep) - config.n_stamps
        keep = keep[: config.n_stamps]
    columns = {
        "subfield": np.full(len(keep), files.subfield, np.int32),
        "id": cat["id"][keep],
        "x": cat["x"][keep],
        "y": cat["y"][keep],
        "sigma": sigma[keep],
        "snr": snr[keep],
    }
    sel.subfields.append(
        _Subfield(files.subfield, np.array(cut[keep], dtype=np.float32), columns, psf)
    )


def _plan(sel: _Selection, config: Great3Config) -> tuple[np.ndarray, int, int]:
    """Validation subfields and how many stamps validation and training take.

    ``n`` = min(``n_stamps``, stamps that passed) is split ``val_fraction`` : rest,
    with whole subfields on each side (:func:`lensgen.data.stamps.split_by_subfield`);
    without ``n_stamps`` every stamp is kept and the share is that of whole subfields.
    """
    passed = [s for s in sel.subfields if len(s.stamps)]
    numbers = np.array([s.number for s in passed], np.int64)
    sizes = np.array([len(s.stamps) for s in passed], np.int64)
    total = int(sizes.sum())
    n = total if config.n_stamps is None else min(config.n_stamps, total)
    want_val = max(1, round(config.val_fraction * n)) if config.val_fraction > 0 else 0
    val = st.split_by_subfield(np.repeat(numbers, sizes), config.val_fraction, config.seed,
                               n_val=want_val)  # fmt: skip
    in_val = np.isin(numbers, val)
    if config.n_stamps is None:  # keep everything: whole subfields on each side
        return val, int(sizes[~in_val].sum()), int(sizes[in_val].sum())
    n_val = min(want_val, int(sizes[in_val].sum()))
    n_train = min(n - n_val, int(sizes[~in_val].sum()))
    return val, n_train, n_val


def _enough(sel: _Selection, config: Great3Config) -> bool:
    """Whether the subfields read so far fill ``n_stamps`` with a leak-free split."""
    if config.n_stamps is None or sel.passed < config.n_stamps:
        return False
    if config.val_fraction > 0 and sum(1 for s in sel.subfields if len(s.stamps)) < 2:
        return False
    _, n_train, n_val = _plan(sel, config)
    return n_train + n_val >= config.n_stamps


def _tarball(config: Great3Config, cache: Path, manifest: Manifest, on_status) -> tuple[str, Path]:
    branch = parse_branch(config.branch)
    if config.synthetic:
        import jax

        # The population and the generator's format version are part of the name: a
        # branch cached for another population or by an older generator is not reused.
        name = f"v2-grid{config.synthetic_grid}-seed{config.seed}-{config.morphology}"
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
        for files in iter_subfields(stream, cache / branch.name, url, branch.epochs):
            check_interrupt()
            _process_subfield(files, branch, config, sel)
            extracted.extend(
                {"name": name, "url": url, "size": s, "sha256": h}
                for name, (s, h) in files.checksums.items()
            )
            on_status(f"subfield {files.subfield:03d}: {sel.passed} stamps pass the S/N cut")
            if _enough(sel, config) or (
                config.max_images is not None and sel.images >= config.max_images
            ):
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
    if sel.passed == 0:
        raise LensgenError(
            f"no stamp has {config.snr_min} ≤ S/N ≤ {config.snr_max} in {sel.images} image(s); "
            "widen --snr-min/--snr-max or read more images"
        )
    if config.val_fraction > 0 and sum(1 for s in sel.subfields if len(s.stamps)) < 2:
        raise LensgenError(
            f"only one subfield of {branch.name} has stamps with {config.snr_min} ≤ S/N ≤ "
            f"{config.snr_max}, and a leak-free validation set needs another (rotated twins "
            "are scattered over a subfield): read more images (--max-images) or pass "
            "--val-fraction 0"
        )
    source = {"name": Path(url).name, "url": url, "size": stream.position, "sha256": stream.sha256}
    ds = _assemble(sel, config, branch, url, [source, *extracted])
    check_interrupt()  # the last moment at which the output is untouched
    write_dataset(output, ds, overwrite=overwrite)
    return ds


def _assemble(sel: _Selection, config: Great3Config, branch, url: str, sources) -> StampDataset:
    """The dataset of the subfields read: whole subfields on each side of the split,
    validation filled first in the seeded subfield order, each subfield's own PSF."""
    val, n_train, n_val = _plan(sel, config)
    passed = [s for s in sel.subfields if len(s.stamps)]
    budget = {"val": n_val, "train": n_train}
    val_order = [int(v) for v in val]  # split_by_subfield's order is kept by sorting below
    parts = []
    for sub in sorted(passed, key=lambda s: (s.number not in val_order, s.number)):
        role = "val" if sub.number in val_order else "train"
        take = min(len(sub.stamps), budget[role])
        budget[role] -= take
        sel.counts["capped"] += len(sub.stamps) - take
        if take:
            parts.append((sub, take, role))
    factor = resolved_rebin(config)
    cols = {
        k: np.concatenate([sub.columns[k][:take] for sub, take, _ in parts])
        for k in parts[0][0].columns
    }
    cols["split"] = np.concatenate([np.full(take, role) for _, take, role in parts])
    cols["psf"] = np.concatenate(
        [np.full(take, i, np.int32) for i, (_, take, _) in enumerate(parts)]
    )
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
        "EPOCHS": branch.epochs,
        "REBIN": factor,
        "NVALSUB": len(val),
        "SEED": config.seed,
        "VALFRAC": config.val_fraction,
        "SYNTHET": config.synthetic,
        **({"MORPHOL": config.morphology} if config.synthetic else {}),
        "SRCURL": url,
    }
    return StampDataset(
        stamps=np.concatenate([sub.stamps[:take] for sub, take, _ in parts]),
        catalog=make_catalog(len(cols["psf"]), **cols),
        pixel_scale=branch.pixel_scale * factor,
        psf=np.stack([sub.psf for sub, _, _ in parts]),
        meta=meta,
        sources=sources,
    )


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
    subfield = np.asarray(ds.catalog["subfield"])
    split = np.char.strip(np.asarray(ds.catalog["split"]).astype(str))
    lines.append(
        f"split by subfield: train {len(np.unique(subfield[split == 'train']))}, "
        f"val {len(np.unique(subfield[split == 'val']))} subfield(s)"
    )
    if ds.psf is not None:
        fwhm = np.array([kernel_fwhm(k, ds.pixel_scale, upsample=8) for k in ds.psf])
        lines.append(
            f"PSF FWHM over {len(fwhm)} PSF(s): median {np.median(fwhm):.3f}″, "
            f"range {fwhm.min():.3f}–{fwhm.max():.3f}″"
        )
    snr = np.asarray(ds.catalog["snr"], float)
    if len(snr):
        lo, hi = float(m.get("SNRMIN", snr.min())), float(m.get("SNRMAX", snr.max()))
        counts, edges = np.histogram(snr, bins=bins, range=(lo, hi))
        width = 40 / max(counts.max(), 1)
        lines.append("S/N histogram:")
        for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            lines.append(f"  {a:6.1f}–{b:6.1f} {c:7d} {'█' * int(round(c * width))}")
    return lines
