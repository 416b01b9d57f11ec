"""The label mapping file: raw crop codes or OSM-style tags -> class names and ids.

Format (YAML)::

    source_column: crop_code        # column of the raw code (or OSM tag key) in the label file
    unknown: drop                   # policy for raw codes not listed: error | drop | other
    other_class: other              # the class that receives unknown codes (policy "other")
    classes:                        # order = model output order; ids are raster values
      - {name: winter_wheat, id: 1, color: "#d8b365", codes: [115, 116]}
      - {name: forest, id: 9, color: "#1b7837", codes: ["landuse=forest", "natural=wood"]}
      - {name: other, id: 20, color: "#bbbbbb", codes: []}

Matching rules:

- codes are compared as text; integral numbers match whatever their type in the file
  (``115``, ``115.0`` and ``"115"`` are one code);
- a ``key=value`` code matches a feature whose column ``key`` holds ``value`` (OSM tags as
  columns), or whose ``source_column`` value is the text ``key=value`` itself;
- a feature matching codes of several classes gets the first class in file order;
- a code listed under two classes is an error; so are two names on one id (ClassMap's rule).

Unknown codes (and missing values) follow ``unknown``: ``error`` refuses the file naming the
codes, ``drop`` removes the features and reports the codes with their counts, ``other`` gives
them the class named by ``other_class`` (which must be listed, usually with no codes).

Two short forms say the same with less typing; ids are then assigned 1, 2, ... in order of
first appearance of each class name and colours are taken, in the same order, from a fixed
qualitative palette (:data:`PALETTE`), so the same file always gives the same legend::

    # short form 1: raw code -> class name
    source_column: crop_code
    unknown: drop
    codes: {115: winter_wheat, 116: winter_wheat, 411: maize}

    # short form 2: class name -> its raw codes
    source_column: crop_code
    classes: {winter_wheat: [115, 116], maize: [411], fallow: 591}

In both short forms, ``unknown: other`` appends the ``other_class`` (id n + 1, grey) unless
it is already named. A key given twice in one YAML mapping (e.g. a class listed twice) is an
error rather than the silent "last one wins" of plain YAML.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from cropflow.classes import IGNORE_INDEX, ClassDef, ClassMap
from cropflow.errors import ConfigError, LabelError

UnknownPolicy = Literal["error", "drop", "other"]

#: Name under which missing raw values are reported.
MISSING_CODE = "<missing>"

#: Colours of the classes of the short forms, in order of first appearance; classes beyond
#: the palette get evenly spread hues (see :func:`palette_color`).
PALETTE: tuple[str, ...] = (
    "#e6ab02",
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#a6761d",
    "#1f78b4",
    "#fb9a99",
    "#b2df8a",
    "#6a3d9a",
    "#fdbf6f",
)
#: Colour of the ``other_class`` appended by the short forms.
OTHER_COLOR = "#bbbbbb"

#: The accepted forms, shown in the hint of every error about the file's structure.
FORMS_HINT = (
    "write the mapping in one of three forms, each with 'source_column: <column of the raw "
    "codes>': 'classes: [{name: maize, id: 2, color: \"#ffa500\", codes: [411]}, ...]', "
    "'classes: {maize: [411], winter_wheat: [115, 116]}' or "
    "'codes: {411: maize, 115: winter_wheat}' (see cropflow.labels.mapping)"
)

#: Top-level keys of a mapping file.
_KEYS = ("source_column", "unknown", "other_class", "classes", "codes")


def normalize_code(value: Any) -> str | None:
    """One text form per raw code: ``115``, ``115.0`` and ``" 115"`` all become ``"115"``."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    if not text:
        return None
    # numeric text such as "115.0" is the same code as 115
    try:
        number = float(text)
    except ValueError:
        return text
    if (
        math.isfinite(number)
        and number.is_integer()
        and text.lstrip("+-").replace(".", "", 1).isdigit()
    ):
        return str(int(number))
    return text


class MappedClass(BaseModel):
    """One output class and the raw codes that become it."""

    name: str = Field(min_length=1, description="Class name, e.g. 'winter_wheat'.")
    id: int = Field(ge=0, lt=IGNORE_INDEX, description="Raster / tensor value of the class.")
    color: str = Field("#808080", pattern=r"^#[0-9a-fA-F]{6}$", description="Map colour.")
    codes: list[str | int | float] = Field(
        default_factory=list, description="Raw codes or 'key=value' tags of this class."
    )
    description: str = ""


def palette_color(position: int) -> str:
    """Colour of the class at ``position`` (0-based) of a short-form mapping: the palette
    first, then hues spread by the golden angle (distinct and deterministic)."""
    if position < len(PALETTE):
        return PALETTE[position]
    hue = ((position - len(PALETTE)) * 0.381966 + 0.05) % 1.0
    red, green, blue = colorsys.hls_to_rgb(hue, 0.5, 0.65)
    return "#" + "".join(f"{round(255 * v):02x}" for v in (red, green, blue))


def _kind(value: Any) -> str:
    """A value described in words, for error messages."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, dict):
        return f"a mapping ({_short(value)})"
    if isinstance(value, list | tuple):
        return f"a list ({_short(value)})"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"a {type(value).__name__}"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _class_rows(
    names: Sequence[str], codes_of: dict[str, list[Any]], raw: dict[str, Any]
) -> list[dict[str, Any]]:
    """Full-form class entries for short-form class names: ids 1..n, palette colours, and the
    ``other_class`` appended when ``unknown: other`` needs it."""
    rows: list[dict[str, Any]] = [
        {"name": name, "id": pos + 1, "color": palette_color(pos), "codes": codes_of[name]}
        for pos, name in enumerate(names)
    ]
    other = raw.get("other_class", LabelMapping.model_fields["other_class"].default)
    if raw.get("unknown") == "other" and isinstance(other, str) and other not in names:
        rows.append({"name": other, "id": len(rows) + 1, "color": OTHER_COLOR, "codes": []})
    return rows


def _from_codes(raw: dict[str, Any]) -> dict[str, Any]:
    """Short form 1, ``codes: {code: class name}``, in the full form."""
    if "classes" in raw:
        raise ConfigError(
            "it has both 'codes' and 'classes': give the classes one way only",
            hint=FORMS_HINT,
        )
    table = raw["codes"]
    if not isinstance(table, dict):
        raise ConfigError(
            f"'codes' should be a mapping of raw code to class name (code: class), "
            f"got {_kind(table)}",
            hint=FORMS_HINT,
        )
    if not table:
        raise ConfigError("'codes' is empty: list at least one 'code: class name'", hint=FORMS_HINT)
    codes_of: dict[str, list[Any]] = {}
    for code, name in table.items():
        if isinstance(name, list | dict):
            raise ConfigError(
                f"'codes' maps each raw code to one class name, but {code!r} maps to "
                f"{_kind(name)}; to list the codes of each class, write "
                f"'classes: {{{code}: [...]}}' instead",
                hint=FORMS_HINT,
            )
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"'codes': the class of raw code {code!r} should be a class name, "
                f"got {_kind(name)}",
                hint=FORMS_HINT,
            )
        codes_of.setdefault(name.strip(), []).append(code)
    rest = {k: v for k, v in raw.items() if k != "codes"}
    return rest | {"classes": _class_rows(list(codes_of), codes_of, raw)}


def _from_class_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Short form 2, ``classes: {class name: [codes]}``, in the full form."""
    codes_of: dict[str, list[Any]] = {}
    for name, codes in raw["classes"].items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"'classes': the key {name!r} should be a class name (text); "
                "a mapping of codes to class names goes under 'codes'",
                hint=FORMS_HINT,
            )
        if isinstance(codes, dict):
            raise ConfigError(
                f"'classes': class {name!r} should have a list of raw codes, got {_kind(codes)}",
                hint=FORMS_HINT,
            )
        if codes is None:
            codes_of[name.strip()] = []
        else:
            codes_of[name.strip()] = list(codes) if isinstance(codes, list) else [codes]
    return raw | {"classes": _class_rows(list(codes_of), codes_of, raw)}


def expand_short_forms(raw: dict[str, Any]) -> dict[str, Any]:
    """A mapping in either short form (see the module docstring) in the full form; other
    content is returned as it is."""
    if "codes" in raw:
        return _from_codes(raw)
    if isinstance(raw.get("classes"), dict):
        return _from_class_dict(raw)
    return raw


class LabelMapping(BaseModel):
    """A parsed mapping file (see the module docstring for the format and its short forms)."""

    source_column: str = Field(description="Column of the raw code (or OSM tag key).")
    unknown: UnknownPolicy = Field(
        "error", description="What to do with raw codes not listed: error | drop | other."
    )
    other_class: str = Field("other", description="Class receiving unknown codes (policy other).")
    classes: list[MappedClass] = Field(min_length=1, description="Output classes, in order.")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        return expand_short_forms(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> LabelMapping:
        names = [c.name for c in self.classes]
        for name in dict.fromkeys(n for n in names if names.count(n) > 1):
            ids = [c.id for c in self.classes if c.name == name]
            raise ConfigError(
                f"class {name!r} is listed {len(ids)} times (ids {ids}); a class has one id",
                hint="list each class once, with all its codes",
            )
        self.class_map  # noqa: B018 - ClassMap refuses duplicate names and ids
        seen: dict[str, str] = {}
        for cls in self.classes:
            for code in cls.codes:
                key = normalize_code(code)
                if key is None:
                    raise ConfigError(
                        f"class {cls.name!r} lists an empty code", hint="remove the empty code"
                    )
                if key in seen and seen[key] != cls.name:
                    raise ConfigError(
                        f"raw code {key!r} is listed under two classes: "
                        f"{seen[key]!r} and {cls.name!r}",
                        hint="list every raw code under one class only",
                    )
                seen[key] = cls.name
        if self.unknown == "other" and self.other_class not in [c.name for c in self.classes]:
            raise ConfigError(
                f"unknown: other needs a class named {self.other_class!r}, which is not listed",
                hint=f"add '- {{name: {self.other_class}, id: <free id>, codes: []}}' to classes, "
                "or set other_class to a listed class",
            )
        return self

    @property
    def class_map(self) -> ClassMap:
        """The legend that travels with the training set and the model."""
        return ClassMap(
            classes=[
                ClassDef(id=c.id, name=c.name, color=c.color, description=c.description)
                for c in self.classes
            ]
        )

    def code_table(self) -> dict[str, int]:
        """Normalised raw code -> position of its class in ``classes``."""
        return {
            key: pos
            for pos, cls in enumerate(self.classes)
            for key in (normalize_code(code) for code in cls.codes)
            if key is not None
        }

    def tag_keys(self) -> list[str]:
        """Keys of the ``key=value`` codes, in first-seen order."""
        keys: list[str] = []
        for key in self.code_table():
            if "=" in key:
                tag = key.split("=", 1)[0].strip()
                if tag not in keys:
                    keys.append(tag)
        return keys


class MappingReport(BaseModel):
    """What the mapping did to a label table."""

    policy: UnknownPolicy
    n_features: int
    n_mapped: int = Field(description="Features that got a listed class from their code.")
    n_other: int = Field(0, description="Unknown features sent to the 'other' class.")
    n_dropped: int = Field(0, description="Unknown features removed (policy drop).")
    unknown_codes: dict[str, int] = Field(
        default_factory=dict, description="Unknown raw code -> number of features."
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            raise ConfigError(
                f"line {line}: a key is {_kind(key)}; keys are names or codes", hint=FORMS_HINT
            )
        if key in out:
            raise ConfigError(
                f"line {line}: the key {key!r} is given twice in one mapping (YAML would keep "
                "only the last one)",
                hint="give each class, code or setting once",
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """An error location in words: ``('classes', 1, 'id')`` -> "class 2 ('maize'), id"."""
    parts: list[str] = []
    node: Any = raw
    for pos, key in enumerate(loc):
        if isinstance(key, int) and pos > 0 and loc[pos - 1] == "classes":
            parts.pop()
            item = node[key] if isinstance(node, list) and key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"class {key + 1}" + (f" ({name!r})" if name else ""))
        elif isinstance(key, int):
            parts.append(f"item {key + 1}")
        else:
            parts.append(key)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            node = None
    return ", ".join(parts) if parts else "the file"


_UNION_MEMBERS = {"str", "int", "float", "bool"}


def _problem(err: ErrorDetails) -> str:
    """What a pydantic error says, in words."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    field = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "missing":
        return "is missing"
    if kind == "list_type":
        return f"should be a list, got {_kind(got)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if err["loc"] and isinstance(err["loc"][-1], int):
            return (
                f"should be a class such as {{name: maize, id: 2, codes: [411]}}, got {_kind(got)}"
            )
        return f"should be a mapping (key: value), got {_kind(got)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"should be one whole number, got {_kind(got)}"
    if kind in ("string_type",):
        return f"should be text, got {_kind(got)}"
    if kind in ("float_type", "float_parsing"):
        return f"should be a number, got {_kind(got)}"
    if kind == "literal_error":
        return f"should be one of {ctx.get('expected')}, got {_kind(got)}"
    if kind == "string_pattern_mismatch":
        if field == "color":
            return f"should be a colour written '#rrggbb' (e.g. '#1b7837'), got {_kind(got)}"
        return f"has the wrong form: {_kind(got)}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"should be at least {ctx.get('ge', ctx.get('gt'))}, got {_kind(got)}"
    if kind in ("less_than", "less_than_equal"):
        return f"should be below {ctx.get('lt', ctx.get('le'))}, got {_kind(got)}"
    if kind == "too_short" and field == "classes":
        return "should list at least one class; it is empty"
    if kind == "too_short":
        return f"should list at least {ctx.get('min_length', 1)} item(s); it is empty"
    if kind == "string_too_short":
        return "should not be empty"
    message = str(err["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _explain(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Every validation error as 'where: what is wrong', one per place."""
    seen: dict[tuple[int | str, ...], str] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        union = bool(loc) and loc[-1] in _UNION_MEMBERS
        if union:
            loc = loc[:-1]
        if loc in seen:
            continue
        problem = f"should be a code (text or a number), got {_kind(err.get('input'))}"
        seen[loc] = problem if union else _problem(err)
    return "; ".join(f"{_where(loc, raw)}: {what}" for loc, what in seen.items())


def load_mapping(path: str | Path) -> LabelMapping:
    """Read and validate a mapping YAML file (full or short form); errors name the file and
    say, in words, what is wrong where."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"label mapping file not found: {path}",
            hint="give the path of a mapping YAML (source_column, unknown, classes)",
        )
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"label mapping {path}: {exc.message}", hint=exc.hint) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"label mapping {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"label mapping {path} should be a mapping with source_column and classes "
            f"(or codes), got {_kind(raw)}",
            hint=FORMS_HINT,
        )
    if not any(key in raw for key in _KEYS):
        keys = [str(k) for k in raw][:8]
        raise ConfigError(
            f"label mapping {path} has none of the keys {', '.join(_KEYS)}; its keys "
            f"({', '.join(keys)}{', ...' if len(raw) > 8 else ''}) look like raw codes or "
            "class names: put a code -> class table under 'codes:' and name the column "
            "holding the codes with 'source_column:'",
            hint=FORMS_HINT,
        )
    try:
        return LabelMapping.model_validate(raw)
    except ConfigError as exc:
        raise ConfigError(f"label mapping {path}: {exc.message}", hint=exc.hint) from exc
    except ValidationError as exc:
        unknown_keys = [str(k) for k in raw if k not in _KEYS]
        extra = f" (keys not understood: {', '.join(unknown_keys)})" if unknown_keys else ""
        full = expand_short_forms(raw)
        raise ConfigError(
            f"label mapping {path} is invalid: {_explain(exc, full)}{extra}", hint=FORMS_HINT
        ) from exc


def classify(table: pd.DataFrame, mapping: LabelMapping) -> np.ndarray:
    """Position in ``mapping.classes`` of each row's class, or -1 where no code matches."""
    if mapping.source_column not in table.columns:
        raise LabelError(
            f"label column {mapping.source_column!r} (source_column of the mapping) is not in "
            f"the labels; columns are {[str(c) for c in table.columns]}",
            hint="set source_column in the mapping file to the column holding the raw codes",
        )
    codes = mapping.code_table()
    big = len(mapping.classes)
    best = np.full(len(table), big, dtype=np.int64)

    def lookup(keys: pd.Series) -> np.ndarray:
        pos = keys.map(lambda k: codes.get(k, big) if isinstance(k, str) else big)
        return pos.to_numpy(dtype=np.int64)

    plain = table[mapping.source_column].map(normalize_code)
    best = np.minimum(best, lookup(plain))
    prefixed = plain.map(lambda v: None if v is None else f"{mapping.source_column}={v}")
    best = np.minimum(best, lookup(prefixed))
    for key in mapping.tag_keys():
        if key in table.columns and key != mapping.source_column:
            values = table[key].map(normalize_code)
            tagged = values.map(lambda v, k=key: None if v is None else f"{k}={v}")
            best = np.minimum(best, lookup(tagged))
    return np.where(best == big, -1, best)


def apply_mapping(
    table: pd.DataFrame, mapping: LabelMapping, *, source: str = "labels"
) -> tuple[pd.DataFrame, MappingReport]:
    """Add ``class_id`` and ``class_name`` columns; handle unknown codes per the policy.

    ``source`` names the label file in error messages.
    """
    pos = classify(table, mapping)
    unknown = pos < 0
    raw = table[mapping.source_column].map(normalize_code).fillna(MISSING_CODE)
    counts: dict[Hashable, int] = raw[unknown].value_counts().to_dict()
    unknown_codes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    report = MappingReport(
        policy=mapping.unknown,
        n_features=len(table),
        n_mapped=int((~unknown).sum()),
        unknown_codes=unknown_codes,
    )
    if unknown.any():
        if mapping.unknown == "error":
            shown = dict(list(unknown_codes.items())[:20])
            raise LabelError(
                f"{source}: {int(unknown.sum())} features have raw codes the mapping does not "
                f"list (code: count): {shown}",
                hint="add the codes to a class in the mapping, or set 'unknown: drop' or "
                "'unknown: other'",
            )
        if mapping.unknown == "other":
            other_pos = [c.name for c in mapping.classes].index(mapping.other_class)
            pos = np.where(unknown, other_pos, pos)
            report.n_other = int(unknown.sum())
        else:
            report.n_dropped = int(unknown.sum())
    keep = pos >= 0
    out = table.loc[keep].copy()
    kept = pos[keep]
    out["class_id"] = np.array([mapping.classes[p].id for p in kept], dtype=np.uint8)
    out["class_name"] = [mapping.classes[p].name for p in kept]
    return out, report
