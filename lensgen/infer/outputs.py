"""The output files of one inference run: named up front, checked before fitting, written together.

A run first lists every file it will write (:func:`infer_outputs`,
:data:`SUBHALO_OUTPUTS`) and checks them with :func:`check_run_outputs` before any
expensive work, so a run that would be refused at the end is refused at the start.
:func:`write_outputs` then writes all of them to temporary files that are renamed onto
the outputs only once every one is complete: a failing or interrupted run leaves no
partial set behind, and a rerun needs no ``--overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lensgen.errors import LensgenError
from lensgen.infer.problem import InferConfig
from lensgen.io.atomic import atomic_outputs, check_output_dir, refuse_input_outputs
from lensgen.io.interrupt import check_interrupt

METHODS = {"nuts": ("nuts",), "svi": ("svi",), "map": ("map",), "nuts+svi": ("nuts", "svi")}
"""The results each ``InferConfig.method`` produces, in order."""

SUBHALO_OUTPUTS = (
    "subhalo_summary.json",
    "subhalo_summary.csv",
    "posterior_subhalo.nc",
    "subhalo.png",
)
"""The files of ``lensgen infer --subhalos N`` (:mod:`lensgen.infer.subhalo_report`)."""


def infer_outputs(
    config: InferConfig, theta_e: bool, coolest: Sequence[str] = ()
) -> list[str]:
    """File names a ``lensgen infer`` run writes, as :func:`~lensgen.infer.report.write_results`.

    Per method: ``posterior_<m>.nc``, ``summary_<m>.csv``, ``corner_<m>.png`` and
    ``draws_lenstronomy_<m>.json`` (not for MAP) and, for SVI with steps,
    ``elbo.png``; then ``bestfit.png``, ``bestfit_lenstronomy.json``, the COOLEST
    files ``coolest`` (:func:`lensgen.infer.coolest.coolest_names` of the problem and
    observation), ``theta_E.png`` when θ_E of the first lens is a free parameter
    (``theta_e``) and the resolved ``config.toml``.
    """
    names = []
    for m in METHODS[config.method]:
        names += [f"posterior_{m}.nc", f"summary_{m}.csv"]
        if m != "map":
            names += [f"corner_{m}.png", f"draws_lenstronomy_{m}.json"]
        if m == "svi" and config.svi_steps > 0:
            names.append("elbo.png")
    names += ["bestfit.png", "bestfit_lenstronomy.json", *coolest]
    if theta_e:
        names.append("theta_E.png")
    names.append("config.toml")
    return names


def check_run_outputs(
    out: str | Path,
    names: Sequence[str],
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
) -> list[Path]:
    """Check every output ``out / name`` of a run before it starts; returns the paths.

    Refused, with one line: ``out`` (or a sub-folder of it) that is a file, a folder
    that cannot be created or written, an output path that is a folder or one of the
    run's ``inputs``, and without ``overwrite`` any output that exists (files of other
    runs in ``out`` are left alone and do not block).
    """
    out = check_output_dir(out)
    paths = [out / n for n in names]
    for folder in sorted({p.parent for p in paths}):
        if folder.exists() and not folder.is_dir():
            raise LensgenError(f"{folder} is a file, not a folder; choose another output folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LensgenError(f"cannot write into {out}: folder {existing} is not writable")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise LensgenError(f"{folders[0]} is a folder; an output file of this run goes there")
    refuse_input_outputs(paths, inputs)
    there = [p for p in paths if p.exists()]
    if there and not overwrite:
        more = f", as do {', '.join(p.name for p in there[1:])}" if len(there) > 1 else ""
        raise LensgenError(
            f"output folder {out} is not empty: {there[0].relative_to(out)} exists{more}; "
            "pass --overwrite to replace them"
        )
    return paths


def write_outputs(
    out: str | Path,
    names: Sequence[str],
    overwrite: bool,
    write: Callable[[dict[str, Path]], None],
) -> list[Path]:
    """Call ``write(targets)`` with a temporary path per name; rename them all at the end.

    ``write`` must write every name it is given. On any error (or Ctrl-C) the temporary
    files are removed, folders created here are removed again, and nothing under
    ``out`` has changed.
    """
    check_interrupt()  # Ctrl-C during the fit: stop before anything is written
    out = Path(out)
    paths = [out / n for n in names]
    created = []
    try:
        for folder in sorted({p.parent for p in paths}, key=lambda f: len(f.parts)):
            for path in reversed([f for f in (folder, *folder.parents) if not f.exists()]):
                path.mkdir()
                created.append(path)
        with atomic_outputs(paths, overwrite) as tmps:
            targets = dict(zip(names, tmps, strict=True))
            write(targets)
            missing = [n for n, t in targets.items() if t.stat().st_size == 0]
            if missing:
                raise RuntimeError(f"lensgen wrote no {', '.join(missing)} (a bug; please report)")
    except BaseException:
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return paths
