"""A quicklook PNG of the class map with a legend (matplotlib Agg, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from cropflow.classes import ClassMap
from cropflow.products.cog import hex_to_rgba

#: Longest side of the quicklook's map, in pixels.
QUICKLOOK_PX = 1024


def write_quicklook(
    class_cog: Path,
    class_map: ClassMap,
    areas: pd.DataFrame,
    dest: Path,
    title: str | None = None,
    max_px: int = QUICKLOOK_PX,
) -> Path:
    """Render the class COG (read at reduced size from its overviews) with a legend."""
    with rasterio.open(class_cog) as src:
        scale = max(1.0, max(src.height, src.width) / max_px)
        shape = (max(1, math.ceil(src.height / scale)), max(1, math.ceil(src.width / scale)))
        classes = src.read(1, out_shape=shape, resampling=Resampling.mode)
    lut = np.zeros((256, 4), np.float32)
    for c in class_map.classes:
        lut[c.id] = np.asarray(hex_to_rgba(c.color), np.float32) / 255.0
    image = lut[classes]

    area_of = dict(zip(areas["class_name"], areas["area_ha"], strict=True))
    handles = [
        Patch(
            facecolor=c.color,
            edgecolor="black",
            linewidth=0.3,
            label=f"{c.name} ({area_of.get(c.name, 0.0):,.1f} ha)",
        )
        for c in class_map.classes
    ]
    aspect = shape[1] / shape[0]
    side = 6.0
    fig = Figure(figsize=(min(16.0, side * aspect) + 2.5, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        frameon=False,
    )
    fig.savefig(dest, format="png", bbox_inches="tight", pad_inches=0.1)
    return dest
