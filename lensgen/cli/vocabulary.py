"""One vocabulary for model names on the command line: lenstronomy's, in any case.

``simulate`` and ``infer`` take the same names: mass profiles as lenstronomy spells
them (``SIS``, ``SIE``, ``EPL``, ``SHEAR``, …), the Sérsic source as
``SERSIC_ELLIPSE`` (``sersic`` is its short alias), the learned source as ``vae``, the
free-form sources as ``pixels`` and ``shapelets``. Case does not matter; the names
are stored in their canonical spelling, which is what TOML files hold.
"""

from __future__ import annotations

from lensgen.errors import LensgenError

ALIASES = {"sersic": "SERSIC_ELLIPSE"}
"""Short names accepted for canonical ones (lower case)."""

INFER_SOURCES = ("vae", "SERSIC_ELLIPSE", "pixels", "shapelets", "vae+pixels", "vae+shapelets")
"""The sources ``lensgen infer --source`` fits (``InferConfig.source`` but ``auto``)."""


def model_name(text: str, allowed: tuple[str, ...], flag: str) -> str:
    """The canonical spelling of ``text`` among ``allowed`` (case-insensitive, with
    :data:`ALIASES`); anything else is refused with the list of choices."""
    key = text.strip().lower()
    key = ALIASES.get(key, key).lower()
    for name in allowed:
        if name.lower() == key:
            return name
    raise LensgenError(f"{flag} {text!r}: choose one of {', '.join(allowed)} (any case)")


def mass_profiles() -> tuple[str, ...]:
    """The mass profile names lensgen renders (lenstronomy's; not the internal
    ``SUBHALOS`` population, which ``--subhalos`` and ``[substructure]`` set up)."""
    from lensgen.lensing.mass import MASS_PROFILES

    return tuple(n for n in MASS_PROFILES if n != "SUBHALOS")


def lens_names(text: str, flag: str = "--lens") -> tuple[str, ...]:
    """Comma-separated mass profiles in canonical spelling, e.g. ``sie,shear`` → SIE, SHEAR."""
    names = [s for s in (part.strip() for part in text.split(",")) if s]
    if not names:
        raise LensgenError(f"{flag}: give at least one mass profile, e.g. SIE,SHEAR")
    allowed = mass_profiles()
    return tuple(model_name(n, allowed, flag) for n in names)
