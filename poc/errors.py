"""The one exception type that reaches a user as a message (exit code 2), never as a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message names the problem and the fix."""


class Cancelled(Exception):
    """Raised in the training process when the launcher (or Ctrl-C) stops it; the run is marked cancelled."""
