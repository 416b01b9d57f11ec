"""The label mapping file: codes and tags to classes, unknown-code policies, short forms, bad
mappings refused in words."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, LabelError
from cropflow.labels.mapping import (
    PALETTE,
    apply_mapping,
    load_mapping,
    normalize_code,
    palette_color,
)

PARCELS = pd.DataFrame(
    {
        "field_id": ["a", "b", "c", "d", "e", "f"],
        "crop_code": [115, 116.0, "411", 999, 999, None],
    }
)


def _mapping(tmp_path: Path, unknown: str, extra: str = "") -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        f"""\
source_column: crop_code
unknown: {unknown}
classes:
  - {{name: winter_wheat, id: 1, color: "#d8b365", codes: [115, 116]}}
  - {{name: maize, id: 2, codes: ["411"]}}
{extra}"""
    )
    return path


def test_codes_of_any_type_map_to_their_class(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "drop"))
    out, report = apply_mapping(PARCELS, mapping)
    assert dict(zip(out["field_id"], out["class_name"], strict=True)) == {
        "a": "winter_wheat",
        "b": "winter_wheat",
        "c": "maize",
    }
    assert out["class_id"].tolist() == [1, 1, 2]
    assert report.n_mapped == 3


def test_unknown_policy_error_names_the_codes(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "error"))
    with pytest.raises(LabelError) as err:
        apply_mapping(PARCELS, mapping, source="parcels.gpkg")
    message = str(err.value)
    assert "parcels.gpkg" in message and "'999': 2" in message and "<missing>" in message
    assert err.value.hint and "unknown: drop" in err.value.hint


def test_unknown_policy_drop_reports_codes_and_counts(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "drop"))
    out, report = apply_mapping(PARCELS, mapping)
    assert len(out) == 3
    assert report.n_dropped == 3
    assert report.unknown_codes == {"999": 2, "<missing>": 1}


def test_unknown_policy_other_sends_them_to_the_other_class(tmp_path: Path) -> None:
    extra = '  - {name: other, id: 20, color: "#bbbbbb", codes: []}\n'
    mapping = load_mapping(_mapping(tmp_path, "other", extra))
    out, report = apply_mapping(PARCELS, mapping)
    assert len(out) == 6
    assert out.set_index("field_id").loc[["d", "e", "f"], "class_name"].tolist() == ["other"] * 3
    assert out.set_index("field_id").loc[["d", "e", "f"], "class_id"].tolist() == [20] * 3
    assert report.n_other == 3 and report.n_dropped == 0
    assert mapping.class_map.names == ["winter_wheat", "maize", "other"]


def test_policy_other_without_an_other_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="other") as err:
        load_mapping(_mapping(tmp_path, "other"))
    assert str(tmp_path / "mapping.yaml") in str(err.value)


def test_two_names_on_one_id_is_an_error(tmp_path: Path) -> None:
    extra = "  - {name: barley, id: 2, codes: [131]}\n"
    with pytest.raises(ConfigError, match="ids used by more than one class") as err:
        load_mapping(_mapping(tmp_path, "drop", extra))
    assert "maize" in str(err.value) and "barley" in str(err.value)


def test_one_code_under_two_classes_is_an_error(tmp_path: Path) -> None:
    extra = "  - {name: barley, id: 3, codes: [115.0]}\n"
    with pytest.raises(ConfigError, match="'115' is listed under two classes"):
        load_mapping(_mapping(tmp_path, "drop", extra))


def test_malformed_mapping_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("source_column: crop_code\nunknown: maybe\nclasses: []\n")
    with pytest.raises(ConfigError, match="unknown") as err:
        load_mapping(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_mapping(tmp_path / "missing.yaml")


def test_missing_source_column_names_the_columns(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "drop"))
    with pytest.raises(LabelError, match="'crop_code'") as err:
        apply_mapping(PARCELS.rename(columns={"crop_code": "code"}), mapping)
    assert "code" in str(err.value) and err.value.hint


def test_osm_tags_match_tag_columns_and_tag_strings(tmp_path: Path) -> None:
    path = tmp_path / "osm.yaml"
    path.write_text(
        """\
source_column: landuse
unknown: drop
classes:
  - {name: forest, id: 9, color: "#1b7837", codes: ["landuse=forest", "natural=wood"]}
  - {name: cropland, id: 1, codes: ["landuse=farmland"]}
  - {name: water, id: 4, codes: ["natural=water"]}
"""
    )
    mapping = load_mapping(path)
    osm = pd.DataFrame(
        {
            "landuse": ["forest", "farmland", None, "residential", "landuse=forest", None],
            "natural": [None, None, "wood", None, None, "water"],
        }
    )
    out, report = apply_mapping(osm, mapping)
    assert out["class_name"].tolist() == ["forest", "cropland", "forest", "forest", "water"]
    assert out.index.tolist() == [0, 1, 2, 4, 5]
    assert report.unknown_codes == {"residential": 1}


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_integral_codes_normalise_alike_whatever_their_type(code: int) -> None:
    expected = str(code)
    assert normalize_code(code) == expected
    assert normalize_code(float(code)) == expected
    assert normalize_code(str(code)) == expected
    assert normalize_code(f" {code}.0 ") == expected


def test_text_codes_are_kept() -> None:
    assert normalize_code("landuse=forest") == "landuse=forest"
    assert normalize_code("WW") == "WW"
    assert normalize_code(1.5) == "1.5"
    assert normalize_code(float("nan")) is None and normalize_code("  ") is None


# --- short forms and readable errors -----------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_short_form_code_to_class_gives_ids_in_order_and_palette_colours(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "source_column: crop_code\nunknown: drop\n"
        "codes: {115: winter_wheat, 411: maize, 116: winter_wheat}\n",
    )
    mapping = load_mapping(path)
    assert mapping.class_map == ClassMap(
        classes=[
            ClassDef(id=1, name="winter_wheat", color=PALETTE[0]),
            ClassDef(id=2, name="maize", color=PALETTE[1]),
        ]
    )
    out, report = apply_mapping(PARCELS, mapping)
    assert out["class_name"].tolist() == ["winter_wheat", "winter_wheat", "maize"]
    assert out["class_id"].tolist() == [1, 1, 2]
    assert report.unknown_codes == {"999": 2, "<missing>": 1}
    assert load_mapping(path) == mapping  # deterministic


def test_short_form_classes_as_lists_of_codes_is_the_same_mapping(tmp_path: Path) -> None:
    by_code = load_mapping(
        _write(
            tmp_path,
            "source_column: crop_code\ncodes: {115: winter_wheat, 116: winter_wheat, 411: maize}\n",
            "codes.yaml",
        )
    )
    by_class = load_mapping(
        _write(
            tmp_path,
            "source_column: crop_code\nclasses:\n  winter_wheat: [115, 116]\n  maize: 411\n",
            "classes.yaml",
        )
    )
    assert by_class.class_map == by_code.class_map
    assert by_class.code_table() == by_code.code_table() == {"115": 0, "116": 0, "411": 1}
    with pytest.raises(LabelError, match="'999': 2"):
        apply_mapping(PARCELS, by_class)  # unknown: error is the default here too


def test_short_forms_append_the_other_class_for_policy_other(tmp_path: Path) -> None:
    mapping = load_mapping(
        _write(
            tmp_path,
            "source_column: crop_code\nunknown: other\nother_class: rest\n"
            "classes: {winter_wheat: [115, 116], maize: [411]}\n",
        )
    )
    assert mapping.class_map.names == ["winter_wheat", "maize", "rest"]
    assert mapping.class_map.ids == [1, 2, 3]
    out, report = apply_mapping(PARCELS, mapping)
    assert report.n_other == 3 and out["class_name"].tolist()[-3:] == ["rest"] * 3


@given(st.integers(min_value=0, max_value=80))
def test_palette_colours_are_valid_and_distinct(n: int) -> None:
    colours = [palette_color(i) for i in range(n)]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    assert len(set(colours)) == n and colours == [palette_color(i) for i in range(n)]


def _refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    text = str(err.value)
    assert str(path) in err.value.message
    assert "Input should" not in text and "valid list" not in text and "Field required" not in text
    return err.value


def test_a_bare_code_table_is_refused_showing_the_accepted_forms(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "{115: winter_wheat, 116: winter_wheat, 411: maize}\n"))
    assert "115, 116, 411" in err.message and "codes:" in err.message
    assert err.hint and "codes: {411: maize" in err.hint and "classes: {maize: [411]" in err.hint
    assert "source_column" in err.hint


def test_a_list_where_a_mapping_is_expected_is_refused_in_words(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "source_column: crop_code\ncodes: [115, 116, 411]\n"))
    assert "'codes' should be a mapping" in err.message and "got a list" in err.message
    err = _refused(
        _write(tmp_path, "source_column: crop_code\ncodes: {winter_wheat: [115, 116]}\n")
    )
    assert "classes: {winter_wheat: [...]}" in err.message


def test_a_class_with_two_ids_is_refused_naming_the_class(tmp_path: Path) -> None:
    err = _refused(
        _write(
            tmp_path,
            "source_column: crop_code\nclasses:\n"
            "  - {name: maize, id: [2, 3], color: orange, codes: [411]}\n",
        )
    )
    assert "class 1 ('maize'), id: should be one whole number, got a list ([2, 3])" in err.message
    assert "class 1 ('maize'), color: should be a colour written '#rrggbb'" in err.message
    err = _refused(
        _write(
            tmp_path,
            "source_column: crop_code\nclasses:\n"
            "  - {name: maize, id: 2, codes: [411]}\n  - {name: maize, id: 3, codes: [412]}\n",
        )
    )
    assert "class 'maize' is listed 2 times (ids [2, 3])" in err.message
    err = _refused(
        _write(tmp_path, "source_column: crop_code\nclasses:\n  maize: [411]\n  maize: [412]\n")
    )
    assert "line 4" in err.message and "'maize' is given twice" in err.message


def test_misspelt_and_missing_keys_are_named(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "source_column: crop_code\nclases: {maize: [411]}\n"))
    assert "classes: is missing" in err.message and "keys not understood: clases" in err.message
    err = _refused(_write(tmp_path, "classes: {maize: [411]}\nunknown: sometimes\n"))
    assert "source_column: is missing" in err.message
    assert "unknown: should be one of 'error', 'drop' or 'other'" in err.message
