"""Inference: a NumPyro model of one observation, its MAP, NUTS and SVI posteriors.

The stages take and return typed values: :func:`build_problem` makes a
:class:`Problem` (model, priors, data and its compiled programs), :func:`find_map`
returns a :class:`MapResult` that :func:`run_nuts` and :func:`run_svi` start from,
and each method returns an :class:`InferenceResult`. :func:`run_infer` is the whole
``lensgen infer`` workflow, from a FITS file to the files it writes;
:func:`read_lenstronomy` reads back its lenstronomy export.
"""

from lensgen.infer.export import read_lenstronomy
from lensgen.infer.mapfit import MapResult, Mode, find_map, laplace
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    build_problem,
    render_values,
    with_data,
)
from lensgen.infer.run import load_infer_config, run_infer, run_inference
from lensgen.infer.samplers import run_nuts, run_svi

__all__ = [
    "InferConfig",
    "InferenceResult",
    "MapResult",
    "Mode",
    "Problem",
    "build_problem",
    "find_map",
    "laplace",
    "load_infer_config",
    "read_lenstronomy",
    "render_values",
    "run_infer",
    "run_inference",
    "run_nuts",
    "run_svi",
    "with_data",
]
