"""The one exception type that reaches a user as a message (exit code 2), never as a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message names the problem and the fix."""


class Cancelled(BaseException):
    """Raised in the training process when the launcher (or Ctrl-C) stops it; the run is marked cancelled.
    A BaseException, as KeyboardInterrupt is: the SIGTERM handler raises it wherever the main thread is, and a
    library's `except Exception` must not swallow it. AutoGraph did: a Cancel that arrived while it converted a
    tf.data function was taken for a conversion failure, and the run trained on, then hung."""
