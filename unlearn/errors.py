"""Errors a user can fix from the command line: printed as one line, without a traceback."""


class UserError(Exception):
    """A bad value, path or setting; ``python -m unlearn`` prints ``error: <message>`` and exits
    with status 1 (``HYDRA_FULL_ERROR=1`` shows the traceback). Bugs are not UserErrors."""
