"""The one exception type for bad user input, shared by every part of the project.

Entry points catch it and print its message as a single ``error:`` line with exit code 2 instead of a
traceback, so the message itself must say what was wrong and what was expected.
"""


class UserInputError(ValueError):
    """A user-supplied path, file, checkpoint, token id or setting cannot be used as given."""
