"""Label reading, mapping, rasterisation, splits and training sets.

Entry points: :func:`build_training_set` (cube + labels), :func:`import_sample_tables`
(tables of labelled time series) and :func:`open_training_set` (the typed reader; the Zarr
layout is documented in :mod:`cropflow.labels.store`).
"""

from cropflow.labels.build import (
    LabelSource,
    TableImportParams,
    TrainingSetOptions,
    TrainingSetParams,
    build_training_set,
    import_sample_tables,
)
from cropflow.labels.io import read_labels
from cropflow.labels.mapping import LabelMapping, load_mapping
from cropflow.labels.store import TrainingSet, open_training_set
from cropflow.labels.summary import TrainingSetSummary
from cropflow.labels.tables import SampleTableParams

__all__ = [
    "LabelMapping",
    "LabelSource",
    "SampleTableParams",
    "TableImportParams",
    "TrainingSet",
    "TrainingSetOptions",
    "TrainingSetParams",
    "TrainingSetSummary",
    "build_training_set",
    "import_sample_tables",
    "load_mapping",
    "open_training_set",
    "read_labels",
]
