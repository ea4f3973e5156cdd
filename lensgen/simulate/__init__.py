"""The ``lensgen simulate`` workflow, above the physics in :mod:`lensgen.lensing`.

:mod:`lensgen.simulate.scene` holds the settings (a TOML scene: lens, source and
lens-light components, instrument, noise, substructure); :mod:`lensgen.simulate.batch`
draws parameters, renders one lens or a vmapped batch, adds noise and writes FITS;
:mod:`lensgen.simulate.population` draws subhalo populations.
"""

from lensgen.simulate.batch import (
    Batch,
    drawn_config,
    run_simulate,
    simulate_batch,
    simulate_observation,
)
from lensgen.simulate.population import SubhaloPopulation, sample_subhalos
from lensgen.simulate.scene import (
    PARAMETRIC_SOURCE,
    Component,
    InstrumentConfig,
    NoiseConfig,
    SimulateConfig,
    dumps_config,
    load_simulate_config,
)

__all__ = [
    "PARAMETRIC_SOURCE",
    "Batch",
    "Component",
    "InstrumentConfig",
    "NoiseConfig",
    "SimulateConfig",
    "SubhaloPopulation",
    "drawn_config",
    "dumps_config",
    "load_simulate_config",
    "run_simulate",
    "sample_subhalos",
    "simulate_batch",
    "simulate_observation",
]
