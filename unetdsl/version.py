"""The package version, in a module of its own so that any module can name it without importing
the package's `__init__` (which would point an import back up the pipeline)."""

__version__ = "0.1.0"
