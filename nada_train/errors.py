"""One exception type for mistakes a user can fix; the CLIs print it as one line, without a traceback."""


class NadaError(Exception):
    """A problem with the user's input: the message names the input and the fix."""
