"""Many lenses in one run: ``lensgen infer`` over a cube, a folder or a glob of files.

A catalogue run lists its lenses (:func:`find_entries`: every slice of a cube written by
``lensgen simulate --n``, every ``.fits`` file of a folder, every match of a glob) and
infers each with ``lensgen infer``'s pipeline (MAP, Laplace mass matrix, NUTS and/or
SVI). The compiled programs are made once per *group* of lenses that share an image
shape, pixel grid, PSF and model (:func:`group_key`): every further lens of a group only
swaps the data (:func:`lensgen.infer.problem.with_data`), so a catalogue pays for
compilation once, not once per lens.

Each lens runs with a key made from ``--seed`` and its id (:func:`lens_key`), so its
result is the one a single-lens run with that key gives, whichever process runs it,
whatever else the catalogue holds and whatever ran before it.

Each lens's record (``lenses/<id>.json``: posterior mean, sd and central 95 % interval
of every scalar parameter, the truth where the file has one, R-hat, ESS, χ²/N, time,
flags, or the reason it failed) is written atomically as soon as that lens is done. A
rerun skips lenses with a record of success and retries failed ones; a run stopped at
any point loses at most the lens in progress. The catalogue table
(``catalogue.fits``, ``catalogue.csv``: one row per lens) is rebuilt from the records
at the end.

Several processes (``jax.distributed``: one per host or per device group) split the
lenses round-robin by ``jax.process_index()``; after a barrier, process 0 writes the
table from everyone's records, so the output folder must be one they all see.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lensgen.config import dumps_toml, to_dict
from lensgen.errors import LensgenError
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    build_problem,
    load_mask,
    raw_key,
    reduced_chi2,
    render_values,
    with_data,
)
from lensgen.infer.report import bestfit_values, scalar_names
from lensgen.infer.run import run_inference
from lensgen.io.atomic import atomic_path, check_output_dir, refuse_input_outputs
from lensgen.io.fits import Observation, read_observations

RECORDS = "lenses"
"""Folder (in the output folder) of the per-lens records ``<id>.json``."""

TABLES = ("catalogue.fits", "catalogue.csv")
"""The catalogue table, one row per lens, as FITS and CSV."""

SETTINGS = "catalogue.toml"
"""The resolved settings of the run; a rerun into the same folder must match them."""

CHI2_FLAG = 1.5
"""χ²/N above which a lens is flagged ``chi2`` (the model misses structure in the data)."""

QUANTILES = (2.5, 16.0, 84.0, 97.5)
"""Percentiles of the central 95 % and 68 % intervals in the table."""

RANK_DRAWS = 99
"""Posterior draws, evenly spaced over all chains, among which a truth is ranked
(simulation-based calibration, Talts et al. 2018: uniform on 0 … 99 when calibrated)."""


@dataclass(frozen=True)
class Entry:
    """One lens of a catalogue: a file, and its slice when the file is a cube."""

    id: str
    path: Path
    index: int | None = None

    @property
    def where(self) -> str:
        return f"{self.path}[{self.index}]" if self.index is not None else str(self.path)


def _files(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".fits", ".fit"))
        if not found:
            raise LensgenError(f"{path}: the folder holds no .fits files")
        return found
    if any(c in str(item) for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
        if not found:
            raise LensgenError(f"{item}: no file matches the pattern")
        return found
    if not path.is_file():
        raise LensgenError(f"observation file not found: {path}")
    return [path]


def _cube_length(path: Path) -> int | None:
    """Number of images of a cube (NAXIS = 3), None for a 2-D image."""
    from astropy.io import fits

    try:
        header = fits.getheader(path)
    except (OSError, ValueError) as exc:
        raise LensgenError(f"{path}: not a readable FITS file: {exc}") from None
    return int(header["NAXIS3"]) if header.get("NAXIS") == 3 else None


def find_entries(inputs: Sequence[str | Path]) -> list[Entry]:
    """The lenses of ``inputs`` (files, folders, glob patterns), in a fixed order.

    Files in the order given, a folder's or a pattern's files sorted by name, a cube's
    slices in order. Ids are file stems, with ``_<slice>`` for a cube; two files with
    the same stem are refused, as their records would collide.
    """
    entries: list[Entry] = []
    seen: dict[str, Path] = {}
    for item in inputs:
        for path in _files(item):
            try:
                n = _cube_length(path)
            except LensgenError:
                n = None  # unreadable: its lens fails with the reader's message, the rest go on
            width = len(str(max((n or 1) - 1, 0)))
            ids = [path.stem] if n is None else [f"{path.stem}_{i:0{width}d}" for i in range(n)]
            for i, name in enumerate(ids):
                if name in seen and seen[name] != path:
                    raise LensgenError(
                        f"two inputs give the lens id {name!r}: {seen[name]} and {path}; "
                        "rename one of them"
                    )
                if name in seen:
                    continue
                seen[name] = path
                entries.append(Entry(name, path, None if n is None else i))
    if not entries:
        raise LensgenError("no observations given")
    return entries


class _Reader:
    """Reads entries, keeping the last file's observations (a cube is read once)."""

    def __init__(self):
        self._path: Path | None = None
        self._obs: list[Observation] = []

    def __call__(self, entry: Entry) -> Observation:
        if entry.path != self._path:
            self._obs, self._path = read_observations(entry.path), entry.path
        if entry.index is None:
            if len(self._obs) != 1:
                raise LensgenError(f"{entry.path}: holds {len(self._obs)} images, expected one")
            return self._obs[0]
        return self._obs[entry.index]


def group_key(obs: Observation) -> tuple:
    """What a compiled problem fixes: the pixel grid, the PSF, the noise model's kind and
    the file's model names. Lenses with equal keys share one problem."""

    def digest(array) -> str | None:
        return None if array is None else hashlib.sha1(np.ascontiguousarray(array)).hexdigest()

    scene = tuple((g, tuple(v)) for g, v in sorted((obs.scene or {}).items()))
    return (obs.image.shape, round(obs.pixel_scale, 12), obs.supersample, obs.convolution,
            obs.orientation, digest(obs.psf), digest(obs.psf_supersampled), scene,
            obs.noise_map is None, obs.exptime is None, obs.background_rms is None)  # fmt: skip


def lens_key(seed: int, lens_id: str):
    """The key of the lens ``lens_id`` in a catalogue run with ``seed``: ``PRNGKey(seed)``
    folded with the first 32 bits of the id's SHA-256, so a lens's result does not
    depend on what else is in the catalogue or in which order."""
    digest = int.from_bytes(hashlib.sha256(lens_id.encode()).digest()[:4], "big")
    return jax.random.fold_in(jax.random.PRNGKey(seed), digest)


def _stats(values: np.ndarray, truth: float | None) -> dict[str, float]:
    """Mean, sd, central 95 % and 68 % intervals; with a truth, it and its SBC rank."""
    flat = np.asarray(values, dtype=float).reshape(-1)
    lo95, lo68, hi68, hi95 = np.percentile(flat, QUANTILES)
    sd = float(flat.std(ddof=1)) if flat.size > 1 else math.nan
    out = {"mean": float(flat.mean()), "sd": sd, "lo95": float(lo95), "hi95": float(hi95),
           "lo68": float(lo68), "hi68": float(hi68)}  # fmt: skip
    if truth is not None:
        thinned = flat[np.linspace(0, flat.size - 1, RANK_DRAWS).astype(int)]
        out["truth"] = float(truth)
        out["rank"] = float((thinned < truth).sum()) if flat.size > 1 else math.nan
    return out


def lens_record(
    entry: Entry, problem: Problem, obs: Observation, results: list[InferenceResult], seconds: float
) -> dict[str, Any]:
    """The catalogue record of one lens from its results (the first method's posterior)."""
    result = results[0]
    _, model = render_values(problem, bestfit_values(problem, result))
    chi2 = reduced_chi2(problem, model)
    diag = result.diagnostics
    params = {}
    for name in scalar_names(result):
        params[name] = _stats(result.samples[name], obs.truth.get(name))
    ess = diag.get("ess") or {}
    rhat = diag.get("rhat") or {}
    flags = []
    if diag.get("converged") is False:
        flags.append("not_converged")
    if diag.get("divergences"):
        flags.append("divergences")
    if chi2 > CHI2_FLAG:
        flags.append("chi2")
    finite_rhat = [r for r in rhat.values() if np.isfinite(r)]
    return {
        "id": entry.id, "file": str(entry.path), "index": entry.index, "status": "done",
        "method": result.method, "time_s": seconds, "chi2": chi2,
        "rhat_max": max(finite_rhat) if finite_rhat else None,
        "ess_min": min(ess.values()) if ess else None,
        "divergences": diag.get("divergences"), "mean_steps": diag.get("mean_steps"),
        "draws_per_chain": diag.get("draws_per_chain"),
        "timings": {k: float(v) for k, v in (diag.get("timings") or {}).items()},
        "flags": flags, "params": params,
    }  # fmt: skip


def failed_record(entry: Entry, reason: str, seconds: float) -> dict[str, Any]:
    """The record of a lens whose inference failed, with the reason."""
    return {"id": entry.id, "file": str(entry.path), "index": entry.index, "status": "failed",
            "reason": reason, "time_s": seconds, "flags": ["failed"]}  # fmt: skip


def _record_path(out: Path, entry: Entry) -> Path:
    return out / RECORDS / f"{entry.id}.json"


def read_record(out: Path, entry: Entry) -> dict[str, Any] | None:
    """The record of ``entry`` in ``out`` (None when there is none or it is unreadable)."""
    path = _record_path(out, entry)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("id") == entry.id else None


def _write_record(out: Path, entry: Entry, record: dict[str, Any]) -> None:
    with atomic_path(_record_path(out, entry), overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _check_settings(out: Path, text: str, overwrite: bool) -> None:
    """Refuse a rerun into ``out`` with other settings (records would mix)."""
    path = out / SETTINGS
    if path.is_file() and not overwrite:
        old = path.read_text(encoding="utf-8")
        if old != text:
            raise LensgenError(
                f"{out} holds a catalogue run with other settings ({path}); use another "
                "--out, or --overwrite to redo every lens"
            )
        return
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


Progress = Callable[[str, int, int, str], None]


@dataclass
class CatalogueRun:
    """What one process did: counts, and the path of the table (process 0)."""

    done: int
    failed: int
    skipped: int
    seconds: float  # this process's own lenses (not the wait for the others)
    table: Path | None
    first_failure: str = ""  # "<id>: <reason>" of this process's first failed lens

    def summary(self) -> str:
        """One line for the console."""
        ran = self.done + self.failed
        rate = f", {self.seconds / ran:.1f} s per lens" if ran else ""
        where = f"; table {self.table} (and .csv)" if self.table is not None else ""
        lenses = "lens" if self.done == 1 else "lenses"
        first = f"; first failure {self.first_failure}" if self.first_failure else ""
        return (f"catalogue: {self.done} {lenses} inferred, {self.failed} failed, {self.skipped} "
                f"done before, in {self.seconds:.0f} s{rate}{where}{first}")  # fmt: skip


def is_catalogue(inputs: Sequence[str | Path]) -> bool:
    """True unless ``inputs`` is one 2-D observation file (a single-lens run)."""
    if len(inputs) != 1:
        return True
    path = Path(inputs[0])
    if not path.is_file():
        return True  # a folder or a pattern; a missing file fails in find_entries
    return _cube_length(path) is not None


def join_processes(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Start JAX's multi-controller runtime (``jax.distributed.initialize``).

    With all three arguments, explicitly (``--coordinator host:port``); with none, from
    the cluster's environment (SLURM, Open MPI, … as JAX detects them).
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise LensgenError(
            "--coordinator, --num-processes and --process-id go together (or none of them, "
            "with --distributed, to read them from the cluster)"
        )
    if all(given):
        if not num_processes or num_processes < 1 or not 0 <= process_id < num_processes:
            raise LensgenError(
                f"--process-id must be in 0 … {max((num_processes or 1) - 1, 0)}, got {process_id}"
            )
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)  # fmt: skip
        return
    try:
        jax.distributed.initialize()
    except (ValueError, RuntimeError) as exc:
        raise LensgenError(
            f"--distributed: JAX found no cluster settings ({str(exc).splitlines()[0]}); "
            "give --coordinator, --num-processes and --process-id"
        ) from None


def run_catalogue(
    config: InferConfig,
    inputs: Sequence[str | Path],
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    source_model=None,
    progress: Progress | None = None,
    header: str = "",
) -> CatalogueRun:
    """Infer every lens of ``inputs`` into ``out`` (see the module docstring).

    With several ``jax.distributed`` processes each takes every ``process_count``-th
    lens from its ``process_index``; all wait at a barrier, then process 0 writes the
    table. ``overwrite`` redoes lenses that already have a record.
    """
    out = check_output_dir(out)
    entries = find_entries(inputs)
    refuse_input_outputs([out / n for n in (*TABLES, SETTINGS)],
                         [*(e.path for e in entries), config.mask, config.priors])  # fmt: skip
    rank, size = jax.process_index(), jax.process_count()
    (out / RECORDS).mkdir(parents=True, exist_ok=True)
    if rank == 0:
        settings = {k: v for k, v in to_dict(config).items() if v is not None}
        _check_settings(out, header + dumps_toml({**settings, "seed": seed}), overwrite)
    mine = [e for i, e in enumerate(entries) if i % size == rank]
    todo = [e for e in mine if overwrite or _status(out, e) != "done"]
    skipped = len(mine) - len(todo)
    read, problems = _Reader(), {}
    done = failed = 0
    first_failure = ""
    start = time.perf_counter()
    if progress is not None:
        progress("lenses", skipped, len(mine), f"{skipped} done before")
    for count, entry in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            obs = read(entry)
            key = group_key(obs)
            if key not in problems:  # the problem and the mask of a group, made once
                mask = load_mask(config.mask, obs.image.shape) if config.mask else None
                problems[key] = (build_problem(config, obs, source_model, mask), mask)
            problem, mask = problems[key]
            problem = with_data(problem, obs, mask=mask, config=config)
            results = run_inference(raw_key(lens_key(seed, entry.id)), problem, config)
            record = lens_record(entry, problem, obs, results, time.perf_counter() - t0)
            done += 1
        except Exception as exc:  # noqa: BLE001 - recorded; the other lenses go on
            text = str(exc).splitlines()[0] if str(exc) else ""
            reason = text if isinstance(exc, LensgenError) else f"{type(exc).__name__}: {text}"
            record = failed_record(entry, reason, time.perf_counter() - t0)
            failed += 1
            first_failure = first_failure or f"{entry.id}: {reason}"
        _write_record(out, entry, record)
        if progress is not None:
            rate = (time.perf_counter() - start) / count
            progress("lenses", skipped + count, len(mine), f"{rate:.1f} s/lens, {failed} failed")
    seconds = time.perf_counter() - start
    if size > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("lensgen catalogue: every lens recorded")
    table = write_table(out, entries) if rank == 0 else None
    return CatalogueRun(done, failed, skipped, seconds, table, first_failure)


def _status(out: Path, entry: Entry) -> str | None:
    record = read_record(out, entry)
    return None if record is None else record.get("status")


def catalogue_rows(out: Path, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """One flat row per lens from the records (a lens without one has status ``missing``)."""
    rows = []
    for entry in entries:
        record = read_record(out, entry) or {
            "id": entry.id, "file": str(entry.path), "index": entry.index,
            "status": "missing", "flags": ["missing"],
        }  # fmt: skip
        row = {k: record.get(k) for k in ("id", "file", "index", "status", "method", "time_s",
                                          "chi2", "rhat_max", "ess_min", "divergences",
                                          "mean_steps", "draws_per_chain")}  # fmt: skip
        for stage, seconds in (record.get("timings") or {}).items():
            row[f"time_{stage}_s"] = seconds
        row["flags"] = ",".join(record.get("flags", []))
        row["reason"] = record.get("reason", "")
        for name, stats in (record.get("params") or {}).items():
            for stat, value in stats.items():
                row[f"{name}.{stat}"] = value
        rows.append(row)
    return rows


def write_table(out: Path, entries: Sequence[Entry]) -> Path:
    """Write ``catalogue.fits`` and ``catalogue.csv`` (atomically) from the records.

    Numbers a lens does not have (a failed lens's parameters, a truth the file does not
    give, R-hat of one chain) are NaN in the FITS table and empty in the CSV; ``index``
    is −1 for a 2-D file.
    """
    from astropy.table import Table

    rows = catalogue_rows(out, entries)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    text = {"id", "file", "status", "method", "flags", "reason"}
    data: dict[str, Any] = {}
    for c in columns:
        values = [row.get(c) for row in rows]
        if c in text:
            data[c] = [v if v is not None else "" for v in values]
        elif c in ("index", "divergences", "draws_per_chain"):
            data[c] = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        else:
            data[c] = np.array([np.nan if v is None else float(v) for v in values])
    table = Table(data)
    fits_path, csv_path = (out / name for name in TABLES)
    with atomic_path(fits_path, overwrite=True) as tmp:
        table.write(tmp, format="fits", overwrite=True)
    with atomic_path(csv_path, overwrite=True) as tmp:
        table.write(tmp, format="ascii.csv", overwrite=True, fill_values=[("nan", "")])
    return fits_path
