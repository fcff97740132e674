"""A small JSON Schema check for the subset msgspec and the OpenAPI document use ($ref, anyOf,
enum, const, type, properties, required, additionalProperties, items): enough to hold real
answers against /openapi.json without a validator dependency."""

from __future__ import annotations

from typing import Any


def check(doc: dict[str, Any], schema: dict[str, Any], value: Any, path: str = "$") -> list[str]:
    """The ways `value` breaks `schema` (resolved in the OpenAPI document `doc`); [] if none."""
    if "$ref" in schema:
        return check(
            doc, doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], value, path
        )
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        results = [check(doc, s, value, path) for s in options]
        if any(not r for r in results):
            return []
        return [
            f"{path}: matches none of {len(options)} options: "
            + "; ".join(r[0] for r in results)[:600]
        ]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r} != {schema['const']!r}"]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    py = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kinds:
        ok = False
        for k in kinds:
            if k == "integer":
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif k == "number":
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok |= isinstance(value, py[k])
        if not ok:
            return [f"{path}: {value!r:.80} is not {kinds}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}: missing required {name!r}")
        for name, item in value.items():
            if name in props:
                problems += check(doc, props[name], item, f"{path}.{name}")
            elif schema.get("additionalProperties") is False or (
                props and "additionalProperties" not in schema
            ):
                # msgspec structs list every field: anything else is undocumented
                problems.append(f"{path}: undocumented field {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += check(doc, schema["additionalProperties"], item, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += check(doc, schema["items"], item, f"{path}[{i}]")
    return problems
