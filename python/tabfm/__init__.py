"""tabfm: fast, reproducible synthetic priors and reference models for tabular foundation models.

The Rust core (``tabfm._core``) generates datasets; :mod:`tabfm.prior` serves them to PyTorch.
"""

from tabfm._core import __version__, available_threads

__all__ = ["__version__", "available_threads"]
