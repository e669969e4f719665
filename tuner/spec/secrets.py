"""Secrets in specs: what is redacted when a spec is written to a file, a terminal or a log."""

from __future__ import annotations

from typing import Any

import yaml

SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey", "credential")


def redacted(value: Any) -> Any:
    """The value with every entry whose key names a secret (hub_token, api_key, ...) replaced by '***'."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) and v not in (None, "") else redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def to_yaml(spec, redact: bool = True) -> str:
    """The spec as YAML, secrets redacted unless asked otherwise: for files, terminals and logs."""
    data = spec.model_dump(mode="json")
    return yaml.safe_dump(redacted(data) if redact else data, sort_keys=False)
