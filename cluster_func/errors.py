"""Errors that the command line turns into a clear message and an exit status."""


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, exit status 2."""

    exit_status = 2


class ScriptError(UserError):
    """The target script could not be loaded or does not provide what is needed."""


class SubmitError(Exception):
    """A job submission failed part way; the message says what was and was not submitted."""

    exit_status = 1
