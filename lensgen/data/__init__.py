"""GREAT3 training data: the download, the tar stream reader, stamp selection, the
offline synthetic branch and its galaxy morphologies, and the dataset build
(``lensgen download-great3``).

Names load their module on first use (PEP 562).
"""

from __future__ import annotations

from lensgen.exports import lazy_exports

_EXPORTS = {
    "Great3Config": "lensgen.data.build",
    "build_great3_dataset": "lensgen.data.build",
    "summary_lines": "lensgen.data.build",
    "Branch": "lensgen.data.great3",
    "parse_branch": "lensgen.data.great3",
    "list_offers": "lensgen.data.great3",
    "make_branch_tarball": "lensgen.data.synthetic",
    "MORPHOLOGIES": "lensgen.data.morphology",
}
"""Public name → the module that defines it (loaded on first use)."""

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
