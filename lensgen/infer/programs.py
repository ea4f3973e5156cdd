"""Compiled programs of one inference model, owned by the problem that built them.

A :class:`Programs` object is made with each :class:`~lensgen.infer.problem.Problem`
(:func:`~lensgen.infer.problem.build_problem`) and travels with it through
:func:`~lensgen.infer.problem.with_data`, so every observation of the same shape
reuses the same compiled MAP optimiser, derivatives, NUTS transition and SVI step.
A program is looked up by its *settings object*: a frozen, hashable value (such as
:class:`~lensgen.infer.samplers.NutsSettings`) that is the only input of the
builder besides the model, so a setting the builder reads cannot be missing from
the key. The time spent compiling is counted (``compile_seconds``) for the run's
timing summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import numpy as np
from numpyro.infer.util import constrain_fn, potential_energy


class ModelFunctions(NamedTuple):
    """Data-independent functions of a model; ``x`` is a dict of unconstrained values."""

    potential: Callable  # (x, data) -> negative log joint
    constrain: Callable  # (x, data) -> constrained sample and deterministic sites


class Compiled:
    """``jax.jit(fn)`` compiled ahead of time per argument signature, timing each compile."""

    def __init__(self, fn: Callable, owner: Programs) -> None:
        self._jit = jax.jit(fn)
        self._owner = owner
        self._executables: dict[Any, Any] = {}

    def __call__(self, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        signature = (tree, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves))
        executable = self._executables.get(signature)
        if executable is None:
            t0 = time.perf_counter()
            executable = self._jit.lower(*args).compile()
            self._owner.compile_seconds += time.perf_counter() - t0
            self._executables[signature] = executable
        return executable(*args)


class Programs:
    """The compiled programs of one NumPyro model (see the module docstring).

    Parameters
    ----------
    model : callable
        The model function ``model(data)`` of the problem.
    """

    def __init__(self, model: Callable) -> None:
        self.model = model
        self.compile_seconds = 0.0
        self._functions: ModelFunctions | None = None
        self._programs: dict[Hashable, Any] = {}

    def functions(self) -> ModelFunctions:
        """Jitted potential and constrain functions of the model.

        Built from NumPyro's ``potential_energy`` and ``constrain_fn``, which map each
        site's unconstrained value through the bijection of its prior's support as they
        trace. The model is never run outside ``jax.jit`` (which would compile each of
        its operations on its own); called inside another jitted program, these are
        inlined.
        """
        if self._functions is None:
            model = self.model
            self._functions = ModelFunctions(
                potential=jax.jit(lambda x, d: potential_energy(model, (d,), {}, x)),
                constrain=jax.jit(
                    lambda x, d: constrain_fn(model, (d,), {}, x, return_deterministic=True)
                ),
            )
        return self._functions

    def get(self, settings: Hashable, build: Callable[[], Any]):
        """The program for ``settings``, made by ``build()`` the first time it is asked for."""
        if settings not in self._programs:
            self._programs[settings] = build()
        return self._programs[settings]

    def compile(self, fn: Callable) -> Compiled:
        """``fn`` jitted, compiled ahead of time with the compile time counted."""
        return Compiled(fn, self)
