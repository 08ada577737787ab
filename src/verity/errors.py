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


class ContextLengthError(ConfigError):
    """A prompt plus the requested completion tokens that do not fit the model's context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context: int, name: str = "max_tokens"):
        self.prompt_tokens, self.max_tokens, self.context = prompt_tokens, max_tokens, context
        super().__init__(f"{name} {max_tokens}: a prompt of {prompt_tokens} tokens plus {max_tokens} completion "
                         f"tokens exceeds the model's context window of {context} tokens")


class CheckpointError(VerityError):
    """A checkpoint or run folder that is corrupt, unsafe to load, or does not match the run being resumed."""


class DiskFullError(VerityError):
    """A write failed because the disk (or quota) is full; what was written before is kept."""


class ConfigValueError(ConfigError, ValueError):
    """A bad argument value where verifiers 0.1.x raises ``ValueError`` (catchable as either)."""


class ConfigTypeError(ConfigError, TypeError):
    """A wrongly typed argument where verifiers 0.1.x raises ``TypeError`` (catchable as either)."""
