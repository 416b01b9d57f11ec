"""The small exception hierarchy of cropflow.

Every error raised for bad input or an unusable resource is a :class:`CropflowError`. Its
message names the offending input; its ``hint`` says how to fix it. The CLI prints both on one
line and exits non-zero; flows let them propagate so that Prefect marks the run failed with the
same text.
"""

from __future__ import annotations


class CropflowError(Exception):
    """Base class: something the user can fix. ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (fix: {self.hint})"
        return self.message


class ConfigError(CropflowError):
    """A setting, parameter file or flow parameter is invalid."""


class AOIError(CropflowError):
    """The area of interest is missing, malformed, empty or invalid."""


class StacError(CropflowError):
    """A STAC API could not be reached, is not a STAC API, or answered with an error."""


class EmptySearchError(StacError):
    """A search matched no items."""


class ProviderError(CropflowError):
    """A provider, collection, band or asset is unknown or unsupported."""


class DataError(CropflowError):
    """Input data (a COG, a cube, a table) is missing, corrupt or inconsistent."""


class LabelError(CropflowError):
    """Labels are unreadable, outside the cube, in an unknown CRS or map to unknown classes."""


class ContractError(CropflowError):
    """A model's input contract does not match the data it is given."""


class TrainingError(CropflowError):
    """Training cannot proceed (empty split, NaN loss, ...)."""


class StorageError(CropflowError):
    """A disk is full, read-only or not writable: the message names the folder."""


class PublishError(CropflowError):
    """A product could not be published; previous products are left untouched."""
