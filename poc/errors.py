"""The one exception type that reaches a user as a message (exit code 2), never as a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message names the problem and the fix."""


class Cancelled(BaseException):
    """Raised in the training process when the launcher (or Ctrl-C) stops it; the run is marked cancelled.
    A BaseException, as KeyboardInterrupt is, so that no library's `except Exception` between a safe point
    (poc.runs.writer.raise_if_cancelled) and the training's own handler can swallow it."""
