"""User-facing error types (the CLI turns each into one ``error: ...`` line and exit code 2),
and the warning an old name gives."""

import warnings


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


class HallucDeprecationWarning(DeprecationWarning):
    """An old name that still works and will be removed (shown once per place, like
    Lightning's own deprecations)."""


# old names keep working and say so (Python hides DeprecationWarning outside __main__)
warnings.simplefilter("default", HallucDeprecationWarning)
REMOVED_IN = "0.3.0"  # the version that removes the names deprecated in 0.2


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is a deprecated name of ``new``, removed in ``REMOVED_IN``.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     deprecated("model.regularizers", "model.methods")
    >>> print(seen[0].message)
    model.regularizers is deprecated since halluc-cl 0.2.0 and will be removed in 0.3.0; use model.methods
    """
    warnings.warn(f"{old} is deprecated since halluc-cl 0.2.0 and will be removed in "
                  f"{REMOVED_IN}; use {new}", HallucDeprecationWarning, stacklevel=stacklevel)
