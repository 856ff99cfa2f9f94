"""TabICL-class synthetic priors (MLP, tree and mixed SCMs, the causal-DAG prior, dummy) served as
PyTorch datasets."""

from tabfm.prior._config import (
    DEFAULT_ACTIVATIONS,
    DEFAULT_FIXED_HP,
    DEFAULT_SAMPLED_HP,
    PRIOR_TYPES,
    SIMPLE_ACTIVATIONS,
)
from tabfm.prior._dataset import PriorDataset
from tabfm.prior._graph_config import (
    DatasetSection,
    FilterSection,
    GraphConfig,
    GraphSection,
    MechanismSection,
    MissingnessSection,
    NoiseSection,
    ShiftSection,
)
from tabfm.prior._loader import PriorDataLoader

__all__ = [
    "DEFAULT_ACTIVATIONS",
    "DEFAULT_FIXED_HP",
    "DEFAULT_SAMPLED_HP",
    "PRIOR_TYPES",
    "SIMPLE_ACTIVATIONS",
    "DatasetSection",
    "FilterSection",
    "GraphConfig",
    "GraphSection",
    "MechanismSection",
    "MissingnessSection",
    "NoiseSection",
    "PriorDataLoader",
    "PriorDataset",
    "ShiftSection",
]
