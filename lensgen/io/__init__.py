"""Files on disk: FITS observations, stamp datasets, model directories, atomic writes, Ctrl-C.

The public names below load their module on first use (PEP 562), so that the command
line, which needs :mod:`lensgen.io.interrupt` at start-up, does not import astropy for
``lensgen --help``.
"""

from __future__ import annotations

from lensgen.exports import lazy_exports

_EXPORTS = {
    "Observation": "lensgen.io.fits",
    "read_observation": "lensgen.io.fits",
    "write_observation": "lensgen.io.fits",
    "write_batch": "lensgen.io.fits",
    "StampDataset": "lensgen.io.dataset",
    "read_dataset": "lensgen.io.dataset",
    "write_dataset": "lensgen.io.dataset",
    "make_catalog": "lensgen.io.dataset",
    "atomic_outputs": "lensgen.io.atomic",
    "atomic_write_bytes": "lensgen.io.atomic",
    "atomic_write_text": "lensgen.io.atomic",
    "check_outputs": "lensgen.io.atomic",
    "check_output_dir": "lensgen.io.atomic",
    "user_cache_dir": "lensgen.io.atomic",
    "check_interrupt": "lensgen.io.interrupt",
    "deferred_interrupt": "lensgen.io.interrupt",
    "interruptible": "lensgen.io.interrupt",
    "load_tree": "lensgen.io.modeldir",
    "save_tree": "lensgen.io.modeldir",
    "read_json": "lensgen.io.modeldir",
    "write_json": "lensgen.io.modeldir",
}
"""Public name → the module that defines it (loaded on first use)."""

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
