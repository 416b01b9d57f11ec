"""cropflow: crop-type, cropland and land-cover maps from satellite image time series."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cropflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
