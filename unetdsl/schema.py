"""The JSON Schema of the language, generated from the pydantic models.

The committed copy lives at `schemas/unetdsl.schema.json` (editors find it through the
`# yaml-language-server: $schema=...` line of every spec); `make schema` regenerates it and a
test fails when it is stale. It checks types, bounds and keys; the cross-field rules (groups
divide channels, ...) are beyond JSON Schema and live in `unetdsl.resolve`.
"""

from __future__ import annotations

import json
from typing import Any

from .spec.models import Spec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def generate_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    return json.dumps(generate_schema(), indent=2, sort_keys=False) + "\n"
