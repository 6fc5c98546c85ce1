"""User-facing error types. The CLI turns each into one ``error: ...`` line and exit code 2."""


class HallucError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ConfigError(HallucError):
    """An invalid or inconsistent configuration value."""


class DataError(HallucError):
    """Malformed or insufficient fact data."""


class ModelLoadError(HallucError):
    """A model that cannot be found or loaded."""


class TrainingError(HallucError):
    """Training that cannot go on, such as a non-finite loss."""


class WriteError(HallucError):
    """A result file that cannot be written, such as on a full disk; earlier files are kept."""
