"""The search spec: one YAML file, validated by pydantic, whose errors name their YAML path and the value received.

Every problem is listed at once (`SpecError.problems`); unknown keys are errors. `schema` holds the sections and
derived values, `checks` the cross-section checks, `loading` the YAML, overrides and sampled values, `secrets` the
redaction.
"""

from tuner.spec.loading import BASELINE_KEY, load_spec, read_spec, set_dotted, validate_spec, with_sampled
from tuner.spec.schema import (BUNDLED_DATA, EMBEDDED_MODEL, DataSpec, Distribution, Spec, SpecError)
from tuner.spec.secrets import redacted, to_yaml

__all__ = ["BASELINE_KEY", "BUNDLED_DATA", "EMBEDDED_MODEL", "DataSpec", "Distribution", "Spec", "SpecError", "load_spec",
           "read_spec", "redacted", "set_dotted", "to_yaml", "validate_spec", "with_sampled"]
