"""The learned source: the VAE, its latent flow, training and the embedded model.

:class:`SourceModel` (from :func:`load_source_model`) decodes latent vectors into
source-plane images for the renderer; :func:`train` is ``lensgen train-vae`` and
:func:`fit_iaf` is ``lensgen fit-iaf``. Names load their module on first use (PEP 562),
so importing the package does not start flax or optax.
"""

from __future__ import annotations

from lensgen.exports import lazy_exports

_EXPORTS = {
    "SOURCE_PARAMS": "lensgen.source.model",
    "SourceModel": "lensgen.source.model",
    "default_model_path": "lensgen.source.model",
    "load_source_model": "lensgen.source.model",
    "Architecture": "lensgen.source.vae",
    "VAE": "lensgen.source.vae",
    "TrainConfig": "lensgen.source.train",
    "TrainResult": "lensgen.source.train",
    "load_train_config": "lensgen.source.train",
    "train": "lensgen.source.train",
    "FlowConfig": "lensgen.source.fit",
    "fit_iaf": "lensgen.source.fit",
    "load_flow_config": "lensgen.source.fit",
}
"""Public name → the module that defines it (loaded on first use)."""

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
