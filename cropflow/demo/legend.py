"""The demo legend: classes, their raster ids and colours, and the raw parcel codes behind them.

Raw codes imitate a German LPIS parcel file (numeric "Nutzungscodes" with German names). They
are illustrative, not an official code list. Two rare raw codes (:data:`UNLISTED`) occur in the
parcels but are deliberately missing from the shipped mapping file, to exercise unknown-code
policies; in the truth raster their fields are 0 (no class of the legend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cropflow.classes import ClassDef, ClassMap

Kind = Literal["crop", "non-crop"]


@dataclass(frozen=True)
class RawCode:
    """One raw code of the parcel file, its local-language name and its share within a class."""

    code: int
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class DemoClass:
    """One class of the demo legend. ``cover`` names its land-cover model in the simulator."""

    name: str
    id: int
    color: str
    kind: Kind
    codes: tuple[RawCode, ...]
    description: str
    #: share of the agricultural fields given this class (0 for the carved non-crop areas)
    field_weight: float = 0.0

    @property
    def cover(self) -> str:
        return self.name


@dataclass(frozen=True)
class UnlistedCrop:
    """A rare raw code present in the parcels but absent from the mapping file."""

    code: int
    name: str
    cover: str
    kind: Kind


CLASSES: tuple[DemoClass, ...] = (
    DemoClass(
        "winter_wheat",
        1,
        "#d8b365",
        "crop",
        (RawCode(115, "Winterweichweizen", 0.85), RawCode(112, "Winterhartweizen", 0.15)),
        "Winter wheat: sown in autumn, green in March, ripe in July.",
        0.20,
    ),
    DemoClass(
        "winter_barley",
        2,
        "#f6e8c3",
        "crop",
        (RawCode(131, "Wintergerste"),),
        "Winter barley: the earliest cereal, harvested in early July.",
        0.10,
    ),
    DemoClass(
        "winter_rapeseed",
        3,
        "#ffff33",
        "crop",
        (RawCode(311, "Winterraps"),),
        "Winter oilseed rape: yellow flowering in late April and May.",
        0.10,
    ),
    DemoClass(
        "spring_barley",
        4,
        "#dfc27d",
        "crop",
        (RawCode(132, "Sommergerste"),),
        "Spring barley: sown in March, green in May and June.",
        0.07,
    ),
    DemoClass(
        "maize",
        5,
        "#e66101",
        "crop",
        (RawCode(411, "Silomais", 0.6), RawCode(171, "Körnermais", 0.4)),
        "Maize (silage and grain): sown in late April, green from July to September.",
        0.14,
    ),
    DemoClass(
        "sugar_beet",
        6,
        "#b2abd2",
        "crop",
        (RawCode(603, "Zuckerrüben"),),
        "Sugar beet: canopy closes in June and stays green until lifted in October.",
        0.06,
    ),
    DemoClass(
        "sunflower",
        7,
        "#fdb863",
        "crop",
        (RawCode(320, "Sonnenblumen"),),
        "Sunflower: flowers in July, dries down in August.",
        0.05,
    ),
    DemoClass(
        "soybean",
        8,
        "#5e3c99",
        "crop",
        (RawCode(330, "Sojabohnen"),),
        "Soybean: a late summer crop, green in August.",
        0.05,
    ),
    DemoClass(
        "double_crop",
        9,
        "#a6611a",
        "crop",
        (RawCode(179, "Wintergerste mit Zweitfrucht Silomais"),),
        "Double crop: winter barley, then silage maize sown after the July harvest.",
        0.05,
    ),
    DemoClass(
        "grassland",
        10,
        "#a6dba0",
        "non-crop",
        (
            RawCode(451, "Wiesen", 0.45),
            RawCode(452, "Mähweiden", 0.30),
            RawCode(453, "Weiden", 0.25),
        ),
        "Permanent grassland: meadows mown three times, pastures grazed.",
        0.14,
    ),
    DemoClass(
        "forest",
        11,
        "#1b7837",
        "non-crop",
        (
            RawCode(561, "Laubwald"),
            RawCode(562, "Mischwald"),
            RawCode(563, "Nadelwald"),
        ),
        "Forest: pine with broadleaved trees in varying shares.",
    ),
    DemoClass(
        "water",
        12,
        "#2166ac",
        "non-crop",
        (RawCode(583, "Stillgewässer"),),
        "Open water: a lake, with a summer algal bloom.",
    ),
    DemoClass(
        "built_up",
        13,
        "#636363",
        "non-crop",
        (RawCode(994, "Hof- und Gebäudeflächen"),),
        "Built-up: village houses, yards and gardens.",
    ),
)

#: Raw codes that the parcels contain and the mapping file does not list (one field each).
UNLISTED: tuple[UnlistedCrop, ...] = (
    UnlistedCrop(422, "Kleegras", "clover_grass", "crop"),
    UnlistedCrop(210, "Erbsen", "peas", "crop"),
)

#: The raw code of meadows mown three times, pastures (not mown) and their mix.
MEADOW_CODE, MIXED_GRASS_CODE, PASTURE_CODE = 451, 452, 453

#: Forest codes by conifer share: broadleaved, mixed, coniferous.
FOREST_CODES = (561, 562, 563)


def class_by_name(name: str) -> DemoClass:
    """The demo class called ``name``."""
    for cls in CLASSES:
        if cls.name == name:
            return cls
    raise KeyError(name)


def demo_class_map() -> ClassMap:
    """The demo legend as a :class:`~cropflow.classes.ClassMap` (order = model output order)."""
    return ClassMap(
        classes=[
            ClassDef(id=c.id, name=c.name, color=c.color, description=c.description)
            for c in CLASSES
        ]
    )


def code_names() -> dict[int, str]:
    """Every raw code of the parcels (listed and unlisted) -> its local name."""
    names = {rc.code: rc.name for cls in CLASSES for rc in cls.codes}
    names.update({u.code: u.name for u in UNLISTED})
    return names
