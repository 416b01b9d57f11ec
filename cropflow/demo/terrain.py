"""The demo region's terrain: a gently tilted plain, a wooded hill, a lake in a hollow.

Elevation is consistent with the land cover, as in a real young-moraine landscape: the forest
stands on a hill whose flanks are the steepest ground of the region (slope visible in the land
cover), the fields lie on the plain, the lake's surface is flat and lower than its shore.
Defined on the 10 m world grid; the generator writes it as a Copernicus DEM GLO-30-shaped COG
(1 arc-second in latitude, 1.5 in longitude at this latitude, EPSG:4326, float32).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cropflow.demo.grid import RES_10
from cropflow.demo.noise import SmoothField, stream

#: Elevation of the plain's north-west corner, metres.
BASE_M = 42.0
#: Rise of the plain towards the south-east, metres per kilometre.
TILT_M_PER_KM = 1.5
#: Height of the wooded hill above the plain, metres.
HILL_M = 28.0
#: Distance from the forest edge over which the hill rises to most of its height, metres.
HILL_RISE_M = 70.0
#: Depth of the lake's surface below its shore, metres.
LAKE_DROP_M = 2.5


def elevation(
    seed: int, forest: np.ndarray, water: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Elevation (m, float32) of the 10 m world grid.

    ``forest`` and ``water``: boolean rasters of the land cover; ``x``/``y``: pixel-centre
    eastings along a row and northings down a column.
    """
    xx = (x - x.min())[None, :]
    yy = (y.max() - y)[:, None]
    plain = BASE_M + TILT_M_PER_KM * (xx + yy) / 1000.0
    rng = stream(seed, "terrain")
    plain = plain + 1.5 * SmoothField.random(rng, 150.0, 600.0).sample(x, y)
    inside = ndimage.distance_transform_edt(forest) * RES_10
    hill = HILL_M * (1.0 - np.exp(-inside / HILL_RISE_M))
    z = plain + hill
    if water.any():
        shore = ndimage.binary_dilation(water, iterations=2) & ~water
        level = float(np.min(z[shore])) if shore.any() else float(np.min(z[water]))
        z = np.where(water, level - LAKE_DROP_M, z)
    return np.asarray(z, dtype=np.float32)
