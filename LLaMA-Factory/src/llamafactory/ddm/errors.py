"""The one exception type for bad user input in the diffusion core.

Entry points catch it and print its message as a single line, with a non-zero exit code,
instead of a traceback: the message itself must say what was expected.
"""


class DiffusionInputError(ValueError):
    """A user-supplied path, checkpoint, token or setting cannot be used as given."""
