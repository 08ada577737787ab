"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class VerityError(Exception):
    """A problem with the user's input (file, row, column, flag) rather than a bug in verity."""


class ConfigError(VerityError):
    """A bad flag or config value, raised before any compute starts."""


class DatasetError(VerityError):
    """A dataset with a missing or mistyped column (the message names the column and row)."""


class EnvironmentNotFound(VerityError):
    """An environment id, module or file that cannot be found."""


class EndpointError(VerityError):
    """An OpenAI-compatible endpoint that cannot be reached or refuses the request."""
