"""Reference models trained on tabfm's priors."""

from tabfm.models.icl import PRESETS, ICLConfig, TabICLModel

__all__ = ["PRESETS", "ICLConfig", "TabICLModel"]
