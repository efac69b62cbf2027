"""The one exception type the CLI turns into a one-line message and exit code 2.

Raise `EmorecError` at the boundary (bad paths, bad config, bad data) with a message that names
the thing that is wrong and how to fix it; everything below the boundary may trust its inputs.
"""


class EmorecError(Exception):
    """A user-facing error: the message is printed as is, on one line, with exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
