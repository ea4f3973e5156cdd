"""User-facing errors, and the one "did you mean" hint they share.

Every problem a user can fix (a bad config key, a missing file, an invalid value)
is raised as :class:`LensgenError` with a one-line message naming the file, key or
value. The CLI prints the message and exits non-zero without a traceback.
"""

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class LensgenError(Exception):
    """An error caused by the user's input, reported as one line by the CLI."""


class ConfigError(LensgenError):
    """A configuration file or value is invalid."""
