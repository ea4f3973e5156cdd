"""The training-set file: a FITS file of galaxy postage stamps.

Layout (all written by :func:`write_dataset`, read by :func:`read_dataset`):

* primary HDU: no data; header ``PIXSCALE`` (arcsec/pixel), ``BRANCH``, ``SNRMIN``,
  ``SNRMAX``, ``NSTAMPS``, ``LGVERS`` (lensgen version) and free-form metadata;
* ``STAMPS``: float32 cube (N, H, W), raw flux per pixel, not normalised;
* ``CATALOG``: one row per stamp: ``subfield``, ``id``, ``x``, ``y`` (stamp centre in
  the GREAT3 image, pixels of that image), ``sigma`` (noise rms, flux/pixel), ``snr``
  (matched-filter S/N), ``psf`` (index of the stamp's PSF in the ``PSF`` cube),
  ``split`` (``"train"`` or ``"val"``);
* ``PSF`` (optional): float32 (P, h, w) kernels, each normalised to unit sum, same
  pixel scale: one per subfield, since GREAT3 draws seeing and optics per field.
  Files written before per-subfield PSFs hold one (h, w) kernel and a ``pair``
  column instead of ``psf``; they read as a one-kernel cube with every ``psf`` = 0;
* ``SOURCES`` (optional): the files the set was built from: ``name``, ``url``,
  ``size`` (bytes), ``sha256``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from lensgen import __version__
from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_path

CATALOG_COLUMNS = ("subfield", "id", "x", "y", "sigma", "snr", "psf", "split")
_FORMATS = {
    "subfield": "J",
    "id": "K",
    "x": "D",
    "y": "D",
    "sigma": "D",
    "snr": "D",
    "psf": "J",
    "split": "5A",
}


@dataclass(frozen=True)
class StampDataset:
    """Galaxy postage stamps with their catalogue, PSF and provenance.

    Attributes
    ----------
    stamps : (N, H, W) float32, flux per pixel.
    catalog : column name → (N,) array, see the module docstring.
    pixel_scale : arcsec per pixel.
    psf : (P, h, w) float32 kernels with unit sum (a 2-D kernel is taken as P = 1), or None.
    meta : header metadata (branch, cuts, …).
    sources : list of dicts with name, url, size, sha256.
    """

    stamps: np.ndarray
    catalog: dict[str, np.ndarray]
    pixel_scale: float
    psf: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stamps.ndim != 3:
            raise ValueError(f"stamps must be (N, H, W), got shape {self.stamps.shape}")
        missing = [c for c in CATALOG_COLUMNS if c not in self.catalog]
        if missing:
            raise ValueError(f"catalog lacks columns {missing}")
        n = self.stamps.shape[0]
        for name, col in self.catalog.items():
            if len(col) != n:
                raise ValueError(f"catalog column '{name}' has {len(col)} rows, stamps {n}")
        if self.psf is not None:
            psf = np.asarray(self.psf, np.float32)
            if psf.ndim == 2:
                psf = psf[None]
            if psf.ndim != 3 or len(psf) == 0:
                raise ValueError(f"PSF must be (P, h, w) or (h, w), got shape {psf.shape}")
            object.__setattr__(self, "psf", psf)
            index = np.asarray(self.catalog["psf"])
            if n and (index.min() < 0 or index.max() >= len(psf)):
                raise ValueError(f"catalog column 'psf' indexes {len(psf)} PSF(s) out of range")

    def __len__(self) -> int:
        return self.stamps.shape[0]

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.stamps.shape[1], self.stamps.shape[2]

    def stamp_psfs(self, indices: np.ndarray) -> np.ndarray | None:
        """The PSF of each stamp in ``indices``, (len, h, w), or None without PSFs."""
        if self.psf is None:
            return None
        return self.psf[np.asarray(self.catalog["psf"])[indices]]

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the stamps in ``split`` ("train" or "val")."""
        return np.flatnonzero(np.char.strip(self.catalog["split"].astype(str)) == split)


def write_dataset(path: str | Path, ds: StampDataset, overwrite: bool = False) -> Path:
    """Write ``ds`` to ``path`` atomically (temporary file, then rename)."""
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["PIXSCALE"] = (float(ds.pixel_scale), "arcsec / pixel")
    hdr["NSTAMPS"] = (len(ds), "number of stamps")
    hdr["LGVERS"] = (__version__, "lensgen version")
    for key, value in ds.meta.items():
        hdr[_header_key(key)] = value
    cols = []
    for name in CATALOG_COLUMNS:
        data = np.asarray(ds.catalog[name])
        if name == "split":
            data = data.astype("U5")
        cols.append(fits.Column(name=name, format=_FORMATS[name], array=data))
    hdus = [
        primary,
        fits.ImageHDU(np.asarray(ds.stamps, dtype=np.float32), name="STAMPS"),
        fits.BinTableHDU.from_columns(cols, name="CATALOG"),
    ]
    if ds.psf is not None:
        hdus.append(fits.ImageHDU(np.asarray(ds.psf, dtype=np.float32), name="PSF"))
    if ds.sources:
        src_cols = [
            fits.Column(name="name", format="200A", array=[s["name"] for s in ds.sources]),
            fits.Column(name="url", format="400A", array=[s.get("url", "") for s in ds.sources]),
            fits.Column(name="size", format="K", array=[int(s.get("size", 0)) for s in ds.sources]),
            fits.Column(
                name="sha256", format="64A", array=[s.get("sha256", "") for s in ds.sources]
            ),
        ]
        hdus.append(fits.BinTableHDU.from_columns(src_cols, name="SOURCES"))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return Path(path)


def _header_key(key: str) -> str:
    key = key.upper()
    return key if len(key) <= 8 else f"HIERARCH {key}"


def read_dataset(path: str | Path) -> StampDataset:
    """Read a dataset file, with errors that name the file and the missing part."""
    path = Path(path)
    if not path.is_file():
        raise LensgenError(
            f"dataset file not found: {path} (make one with `lensgen download-great3`)"
        )
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            for need in ("STAMPS", "CATALOG"):
                if need not in names:
                    raise LensgenError(f"{path}: not a lensgen dataset (no {need} extension)")
            hdr = hdul[0].header
            if "PIXSCALE" not in hdr:
                raise LensgenError(f"{path}: primary header lacks PIXSCALE")
            stamps = np.asarray(hdul["STAMPS"].data, dtype=np.float32)
            table = hdul["CATALOG"].data
            catalog = {}
            for name in CATALOG_COLUMNS:
                if name == "psf" and name not in table.columns.names:
                    catalog[name] = np.zeros(len(table), np.int32)  # one PSF for all
                    continue
                if name not in table.columns.names:
                    raise LensgenError(f"{path}: CATALOG lacks column '{name}'")
                col = np.asarray(table[name])
                catalog[name] = np.char.strip(col.astype(str)) if name == "split" else col
            psf = np.asarray(hdul["PSF"].data, dtype=np.float32) if "PSF" in names else None
            sources = []
            if "SOURCES" in names:
                for row in hdul["SOURCES"].data:
                    sources.append(
                        {
                            "name": str(row["name"]),
                            "url": str(row["url"]),
                            "size": int(row["size"]),
                            "sha256": str(row["sha256"]),
                        }
                    )
            skip = {
                "SIMPLE",
                "BITPIX",
                "NAXIS",
                "EXTEND",
                "PIXSCALE",
                "NSTAMPS",
                "COMMENT",
                "HISTORY",
                "",
            }
            meta = {k.lower(): v for k, v in hdr.items() if k not in skip}
            pixel_scale = float(hdr["PIXSCALE"])
    except LensgenError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LensgenError(f"{path}: cannot read dataset: {exc}") from None
    try:
        return StampDataset(stamps, catalog, pixel_scale, psf, meta, sources)
    except ValueError as exc:
        raise LensgenError(f"{path}: inconsistent dataset: {exc}") from None


def make_catalog(n: int, **columns: Any) -> dict[str, np.ndarray]:
    """A catalogue with defaults for the columns not given (handy for tests)."""
    defaults: Mapping[str, Any] = {
        "subfield": np.zeros(n, np.int32),
        "id": np.arange(n, dtype=np.int64),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "sigma": np.ones(n),
        "snr": np.full(n, np.nan),
        "psf": np.zeros(n, np.int32),
        "split": np.array(["train"] * n),
    }
    return {name: np.asarray(columns.get(name, defaults[name])) for name in CATALOG_COLUMNS}
