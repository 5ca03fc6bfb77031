"""Exception types shared across packages.

Each failure kind has its own type so that boundaries (DICOM status, CLI exit code, HTTP problem+json)
can map it without string matching. Packages derive their own types from these.
"""

from __future__ import annotations

__all__ = ["EusdxError", "ConfigError", "UsageError", "DataError"]


class EusdxError(Exception):
    """Base of every error eusdx raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1


class UsageError(EusdxError):
    """The caller asked for something impossible (bad argument values)."""

    exit_code = 2


class ConfigError(EusdxError):
    """The configuration file or environment is invalid."""

    exit_code = 78  # EX_CONFIG from sysexits.h


class DataError(EusdxError):
    """Input data (a DICOM file, a manifest, a bundle) is malformed or inconsistent."""

    exit_code = 65  # EX_DATAERR
