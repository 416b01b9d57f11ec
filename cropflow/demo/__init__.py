"""The bundled demo region: a synthetic but physically plausible Sentinel-2 L2A region.

Generated deterministically from a seed (:class:`DemoConfig`; ``DemoConfig()`` is the default
demo, ``DemoConfig.tiny()`` the test size) by :func:`generate_demo`: two overlapping windows of
the MGRS tiles 33UUT and 33UVT (Brandenburg, UTM 33N), one season of acquisitions with clouds,
cloud shadows and thin cirrus, COGs and Earth Search v1-like STAC items (with reprocessed
duplicates), an LPIS-like parcel file, crowd-labelled points, a label mapping and the truth
rasters. The folder layout is described in :mod:`cropflow.demo.area`.

:class:`DemoWorld` recomputes the truth from the config: cloud-free surface reflectance of every
band on the 10 m world grid, the cloud / shadow / cirrus mask of each acquisition, the class and
field-id rasters. What the COGs hold beyond that truth (sensor noise, DN rounding, 20 m block
averaging, clouds) is stated exactly in :mod:`cropflow.demo.world`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.demo.area import (
        DemoManifest as DemoManifest,
    )
    from cropflow.demo.area import (
        generate_demo as generate_demo,
    )
    from cropflow.demo.area import (
        load_demo as load_demo,
    )
    from cropflow.demo.config import (
        GENERATOR_VERSION as GENERATOR_VERSION,
    )
    from cropflow.demo.config import (
        DemoConfig as DemoConfig,
    )
    from cropflow.demo.world import (
        DemoWorld as DemoWorld,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "GENERATOR_VERSION": "cropflow.demo.config",
    "DemoConfig": "cropflow.demo.config",
    "DemoManifest": "cropflow.demo.area",
    "generate_demo": "cropflow.demo.area",
    "load_demo": "cropflow.demo.area",
    "DemoWorld": "cropflow.demo.world",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
