"""Secrets in specs: a spec never holds one. A secret-valued field (TRL's `hub_token`, ...) comes from the
environment: the library's own variable (`HF_TOKEN` for the hub), or an environment variable the spec names with
`<field>_env` (`train.hub_token_env: MY_VAR`), read by the trial that needs it. The spec saved with the results holds
that reference, so `--resume` gets the real secret back, and a literal secret in a spec is refused with the fix.

Which fields are secrets is decided on whole field names, never substrings: `hub_token` is one,
`average_tokens_across_devices`, `include_num_input_tokens_seen` and `pad_token` are not.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import yaml

SECRET_NAMES = frozenset({"token", "api_key", "apikey", "password", "passwd", "secret", "credentials"})
SECRET_SUFFIXES = ("_token", "_key", "password", "secret", "_credentials")
# A tokenizer's special tokens end in `_token` too (DPOConfig.pad_token): text, not secrets.
TOKENIZER_TOKENS = frozenset(f"{name}_token" for name in ("pad", "eos", "bos", "unk", "sep", "cls", "mask"))
ENV_SUFFIX = "_env"  # `hub_token_env: MY_VAR`: the secret is read from $MY_VAR where it is used
# Where a library reads the secret itself when the field is left unset.
LIBRARY_VARIABLES = {"hub_token": "HF_TOKEN"}
REDACTED = "***"
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretMissing(ValueError):
    """The environment variable a `<field>_env` reference names is not set where the secret is needed."""


def is_secret(name: str) -> bool:
    """Whether a field name (or the last part of a dotted key) names a secret: whole names, not substrings."""
    field = str(name).rsplit(".", 1)[-1].lower()
    if field in TOKENIZER_TOKENS:
        return False
    return field in SECRET_NAMES or field.endswith(SECRET_SUFFIXES)


def referenced_secret(name: str) -> str | None:
    """The secret field a `<field>_env` key stands for (`hub_token_env` -> `hub_token`), else None."""
    name = str(name)
    if name.endswith(ENV_SUFFIX) and is_secret(name[: -len(ENV_SUFFIX)]):
        return name[: -len(ENV_SUFFIX)]
    return None


def check_train_secret(key: str, value: Any) -> list[str]:
    """Problems with one `train` entry as far as secrets go: a literal secret, or a malformed reference."""
    if referenced_secret(key):
        if not isinstance(value, str) or not _VARIABLE_NAME.match(value):
            return [f"train.{key}: the name of an environment variable holding {referenced_secret(key)}, "
                    f"got {value!r}"]
        return []
    if is_secret(key) and value not in (None, ""):
        return [f"train.{key}: a secret is never written in a spec (it is saved with the results); "
                f"{how_to_give(key)}, got a literal value (not shown)"]
    return []


def how_to_give(field: str) -> str:
    library = LIBRARY_VARIABLES.get(field)
    reference = f"put the name of an environment variable holding it in train.{field}{ENV_SUFFIX}"
    return f"leave it out and set {library} in the environment, or {reference}" if library else reference


def references(train: Mapping[str, Any]) -> dict[str, str]:
    """`field -> environment variable` for every `<field>_env` entry of a spec's `train` section."""
    return {field: value for key, value in train.items() if (field := referenced_secret(key))}


def missing_variables(train: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> list[str]:
    """One line per `<field>_env` whose variable is not set in `environ`."""
    return [f"train.{field}{ENV_SUFFIX}: the environment variable {variable} is not set, got {variable!r}"
            for field, variable in references(train).items() if not environ.get(variable)]


def resolved(train: Mapping[str, Any], with_secrets: bool, environ: Mapping[str, str] = os.environ) -> dict:
    """The `train` section as TRL takes it: every `<field>_env` replaced by `field` with the variable's value
    (`with_secrets`, in the trial that uses it), or dropped (everywhere else: derived values need no secret)."""
    plain = {key: value for key, value in train.items() if not referenced_secret(key)}
    if with_secrets:
        missing = missing_variables(train, environ)
        if missing:
            raise SecretMissing("; ".join(missing) + " (in the process running this trial)")
        plain.update({field: environ[variable] for field, variable in references(train).items()})
    return plain


def redacted(value: Any) -> Any:
    """The value with every entry whose key names a secret replaced by '***' (defence in depth: a validated spec
    holds no secret, only `<field>_env` references, which stay readable)."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(k) and v not in (None, "") else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def to_yaml(spec, redact: bool = True) -> str:
    """The spec as YAML, secrets redacted unless asked otherwise: for files, terminals and logs."""
    data = spec.model_dump(mode="json")
    return yaml.safe_dump(redacted(data) if redact else data, sort_keys=False)
