"""User-facing errors.

Every problem a user can fix (a bad config key, a missing file, an invalid value)
is raised as :class:`LensgenError` with a one-line message naming the file, key or
value. The CLI prints the message and exits non-zero without a traceback.
"""


class LensgenError(Exception):
    """An error caused by the user's input, reported as one line by the CLI."""


class ConfigError(LensgenError):
    """A configuration file or value is invalid."""
