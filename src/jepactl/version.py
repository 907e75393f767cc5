"""The package version (its own module so that run-folder code can record it without importing
the package's public API)."""

__version__ = "0.2.0"
