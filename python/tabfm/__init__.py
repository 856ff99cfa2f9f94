"""tabfm: fast, reproducible synthetic priors and reference models for tabular foundation models.

The Rust core (``tabfm._core``) generates datasets; :mod:`tabfm.prior` serves them to PyTorch,
:mod:`tabfm.train` pretrains models on them and :class:`TabFMClassifier` uses a pretrained one.
"""

from typing import Any

from tabfm._core import __version__, available_threads

__all__ = ["TabFMClassifier", "__version__", "available_threads"]


def __getattr__(name: str) -> Any:
    # Lazy: `import tabfm` stays free of torch for the corpus tools and the CLI.
    if name == "TabFMClassifier":
        from tabfm.classifier import TabFMClassifier

        return TabFMClassifier
    raise AttributeError(f"module 'tabfm' has no attribute {name!r}")
