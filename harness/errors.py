"""Errors the command line turns into one line naming the fix, and exit code 2."""


class UsageError(Exception):
    """A selection or option that cannot run; the message names the valid values or the fix."""
