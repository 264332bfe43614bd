"""Errors that carry a message for the user; ``run.py`` prints them and exits non-zero."""


class LeapError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(LeapError):
    """An invalid configuration value."""


class DataError(LeapError):
    """A missing or unreadable dataset."""
