"""A run's fields as W&B sends them, decoded for `Run`: its JSONString documents parsed (config
split into the user's config and the raw config with W&B's internal keys), and every field that
cannot be read recorded with the reason, so one bad run never stops a listing."""

from __future__ import annotations

from typing import Any

from run_pipeline.client.attrs import parse_document

_INTERNAL_CONFIG_KEYS = ("_wandb", "wandb_version")
_OBJECT_DOCUMENTS = ("summaryMetrics", "systemMetrics")


def decode_run_fields(attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The fields decoded, and for each document among them why it cannot be read (None when
    it can). A config that is not an object is kept as what it is, not replaced by {}; a
    summary or system metrics that is not an object reads as {} and is recorded."""
    decoded = dict(attrs)
    problems: dict[str, str | None] = {}
    if "config" in attrs:
        raw, problems["config"] = _document(attrs["config"], "config")
        if isinstance(raw, dict):
            user_config, rawconfig = {}, {}
            for key, value in raw.items():
                target = rawconfig if key in _INTERNAL_CONFIG_KEYS else user_config
                wrapped = isinstance(value, dict) and "value" in value
                target[key] = value["value"] if wrapped else value
            rawconfig.update(user_config)
        else:
            user_config, rawconfig = raw, {}
        decoded["config"] = user_config
        decoded["rawconfig"] = rawconfig
    for key in _OBJECT_DOCUMENTS:
        if key in attrs:
            value, problems[key] = _document(attrs[key], key)
            if not isinstance(value, dict):
                problems[key] = f"{key} is a JSON {type(value).__name__}, not an object"
                value = {}
            decoded[key] = value
    return decoded, problems


def _document(value: Any, key: str) -> tuple[Any, str | None]:
    try:
        return parse_document(value), None
    except ValueError as exc:
        return {}, f"{key} is not valid JSON ({exc})"
