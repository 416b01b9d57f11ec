"""Label reading, mapping, rasterisation, splits and training sets.

Entry points: :func:`build_training_set` (cube + labels), :func:`import_sample_tables`
(tables of labelled time series) and :func:`open_training_set` (the typed reader; the Zarr
layout is documented in :mod:`cropflow.labels.store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.labels.build import (
        TableImportParams as TableImportParams,
    )
    from cropflow.labels.build import (
        build_training_set as build_training_set,
    )
    from cropflow.labels.build import (
        import_sample_tables as import_sample_tables,
    )
    from cropflow.labels.io import (
        read_labels as read_labels,
    )
    from cropflow.labels.mapping import (
        LabelMapping as LabelMapping,
    )
    from cropflow.labels.mapping import (
        load_mapping as load_mapping,
    )
    from cropflow.labels.options import LabelSource as LabelSource
    from cropflow.labels.options import TrainingSetOptions as TrainingSetOptions
    from cropflow.labels.options import TrainingSetParams as TrainingSetParams
    from cropflow.labels.store import (
        TrainingSet as TrainingSet,
    )
    from cropflow.labels.store import (
        open_training_set as open_training_set,
    )
    from cropflow.labels.summary import (
        TrainingSetSummary as TrainingSetSummary,
    )
    from cropflow.labels.tables import (
        SampleTableParams as SampleTableParams,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "LabelSource": "cropflow.labels.options",
    "TableImportParams": "cropflow.labels.build",
    "TrainingSetOptions": "cropflow.labels.options",
    "TrainingSetParams": "cropflow.labels.options",
    "build_training_set": "cropflow.labels.build",
    "import_sample_tables": "cropflow.labels.build",
    "read_labels": "cropflow.labels.io",
    "LabelMapping": "cropflow.labels.mapping",
    "load_mapping": "cropflow.labels.mapping",
    "TrainingSet": "cropflow.labels.store",
    "open_training_set": "cropflow.labels.store",
    "TrainingSetSummary": "cropflow.labels.summary",
    "SampleTableParams": "cropflow.labels.tables",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
