"""Every error a user can cause, in one place.

Each class is a `UserError`: the CLI prints its message (which names the file, field or argument and
what was expected) and exits with code 2, without a traceback; the server answers 4xx. The second
base class keeps each error catchable as the built-in kind it was before (ValueError, KeyError ...).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a config, a data file, a checkpoint, an argument or an output path."""


class ConfigError(UserError, ValueError):
    """A config key, value or model option that cannot be used."""


class DataError(UserError, ValueError):
    """Bad input data. The message names the file, the field and what was expected."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, foreign or not fitting its model."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on with these settings (a diverged loss, a loss that does not fit the task)."""


class UnknownNameError(UserError, KeyError):
    """A model, dataset or other registered name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class SweepError(ConfigError):
    """A sweep space or study that cannot be used."""


# Nothing raises it yet; it stays as the user-error form of a failed write, for the writers of
# core/io.py, so that the CLI reports such paths like every other user error.
class OutputError(UserError, OSError):
    """An output path that cannot be written (read-only, a device or symlink, a full disk)."""
