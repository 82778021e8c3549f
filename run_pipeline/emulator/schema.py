"""The emulator's executable GraphQL schema: schema.graphql plus W&B's custom scalars."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLID,
    GraphQLSchema,
    GraphQLString,
    build_schema,
    get_nullable_type,
)
from graphql.execution import ExecutionContext
from graphql.language import IntValueNode, StringValueNode, ValueNode

from .dataset import json_safe

SCHEMA_PATH = Path(__file__).with_name("schema.graphql")


def _serialize_json_string(value: Any) -> str:
    # Non-finite floats stay NaN/Infinity tokens *inside* the string, as W&B sends them.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _parse_json_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise GraphQLError(f"JSONString must be a string holding JSON, got {type(value).__name__}")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise GraphQLError(f"JSONString holds invalid JSON: {exc}") from exc


def _parse_json_string_literal(node: ValueNode, _variables: Any = None) -> Any:
    if not isinstance(node, StringValueNode):
        raise GraphQLError("JSONString literal must be a string")
    return _parse_json_string(node.value)


def _serialize_int64(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise GraphQLError(f"Int64 cannot represent {value!r}")
    return int(value)


def _parse_int64(value: Any) -> int:
    if isinstance(value, bool):
        raise GraphQLError("Int64 cannot be a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise GraphQLError(f"Int64 cannot represent {value!r}")


def _parse_int64_literal(node: ValueNode, _variables: Any = None) -> int:
    if isinstance(node, (IntValueNode, StringValueNode)):
        return _parse_int64(node.value)
    raise GraphQLError("Int64 literal must be an integer")


def _serialize_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return str(value)


# Scalars whose serialize returns a `str` value unchanged.
_STR_AS_IS = {GraphQLString.serialize, GraphQLID.serialize, _serialize_json_string}


class FastListExecutionContext(ExecutionContext):
    """graphql-core's executor with one shortcut: a list of plain `str` for a list of string
    scalars is already its completed value, so history and events pages (~1000 JSON rows each)
    skip graphql-core's per-item completion."""

    def complete_list_value(self, return_type, field_nodes, info, path, result):
        if (type(result) is list and getattr(get_nullable_type(return_type.of_type), "serialize", None) in _STR_AS_IS
                and all(type(item) is str for item in result)):
            return result
        return super().complete_list_value(return_type, field_nodes, info, path, result)


@lru_cache(maxsize=1)
def load_schema() -> GraphQLSchema:
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    scalars = schema.type_map
    scalars["JSONString"].serialize = _serialize_json_string
    scalars["JSONString"].parse_value = _parse_json_string
    scalars["JSONString"].parse_literal = _parse_json_string_literal
    scalars["JSON"].serialize = json_safe
    scalars["JSON"].parse_value = lambda v: v
    scalars["Int64"].serialize = _serialize_int64
    scalars["Int64"].parse_value = _parse_int64
    scalars["Int64"].parse_literal = _parse_int64_literal
    scalars["DateTime"].serialize = _serialize_datetime
    scalars["DateTime"].parse_value = str
    schema.type_map["ArtifactCollection"].resolve_type = lambda obj, *_: obj.get("__typename", "ArtifactSequence")
    return schema
