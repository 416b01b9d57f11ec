"""The order of a parameter model's fields in the forms generated from its JSON schema.

Prefect's UI draws a deployment's run form from the flow's parameter schema and orders the
fields of every object by their ``position`` key (fields without one come last, in schema
order). JSON key order alone is not kept by every store (PostgreSQL's JSONB sorts keys), so
the order is written as ``position`` numbers. Use :func:`form_order` as a model's
``json_schema_extra``: the fields people change go first, the ones fixed by a deployment last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

JsonSchemaExtra = Callable[[dict[str, Any], type[Any]], None]


def ordered_fields(names: Sequence[str], first: Sequence[str], last: Sequence[str]) -> list[str]:
    """``names`` reordered: those of ``first`` (in that order), the others, then ``last``."""
    present = set(names)
    head = [n for n in dict.fromkeys(first) if n in present]
    tail = [n for n in dict.fromkeys(last) if n in present and n not in head]
    middle = [n for n in names if n not in head and n not in tail]
    return head + middle + tail


def form_order(first: Sequence[str] = (), last: Sequence[str] = ()) -> JsonSchemaExtra:
    """A ``json_schema_extra`` that numbers the properties: ``first``, the rest, ``last``.

    Names are field names; a field with an alias is found by its alias in the schema. Names
    the model does not have are ignored, so subclasses may add or drop fields.
    """

    def extra(schema: dict[str, Any], model: type[Any]) -> None:
        properties: dict[str, Any] = schema.get("properties", {})
        aliases: dict[str, str] = {}
        if isinstance(model, type) and issubclass(model, BaseModel):
            aliases = {n: f.alias or n for n, f in model.model_fields.items()}
        order = ordered_fields(
            list(properties),
            [aliases.get(n, n) for n in first],
            [aliases.get(n, n) for n in last],
        )
        schema["properties"] = {
            name: {**properties[name], "position": i} for i, name in enumerate(order)
        }

    return extra
