"""The JSON Schema of the language, generated from the pydantic models.

The committed copy lives at `schemas/unetdsl.schema.json` (editors find it through the
`# yaml-language-server: $schema=...` line of every spec), and the package ships the same file
(`SHIPPED`: what the specs unetdsl writes point at); `make schema` regenerates both and a test fails
when either is stale. It checks types, bounds and keys; the cross-field rules (groups
divide channels, ...) are beyond JSON Schema and live in `unetdsl.resolve`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from .extends import KEY as EXTENDS
from .spec.models import Spec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SHIPPED = Path(__file__).with_name("unetdsl.schema.json")


def schema_line(folder: str | os.PathLike[str] | None = None) -> str:
    """The first line of a spec unetdsl writes: the YAML language server's pointer to the schema the
    package ships, relative to `folder` (where the spec is written), absolute when there is none
    (printed) or no relative path (another drive)."""
    target = str(SHIPPED)
    if folder is not None:
        with contextlib.suppress(ValueError):  # no relative path (another drive): keep the absolute one
            target = os.path.relpath(SHIPPED, os.path.abspath(folder))
    return f"# yaml-language-server: $schema={target}"


def generate_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(mode="validation")
    # `extends` is consumed by the front end before validation (unetdsl/extends.py), so the model
    # never sees it. A file that extends another holds only its changes: nothing is required of
    # it on its own (the merged document is checked in full when it is loaded).
    schema["properties"] = {
        EXTENDS: {"type": "string", "minLength": 1,
                  "description": "Path of the spec this one changes, relative to this file: mappings merge key "
                                 "by key, lists and values replace, --set applies last."},
        **schema["properties"],
    }
    _allow_attention_switch(schema)
    required = schema.pop("required")
    schema["if"] = {"required": [EXTENDS]}
    schema["else"] = {"required": required}
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    return json.dumps(generate_schema(), indent=2, sort_keys=False) + "\n"


def _allow_attention_switch(node: Any) -> None:
    """`attention: true | false` is accepted (models.py's before-validator turns it into `{}` or
    null); pydantic's schema shows only the annotation, so add the boolean where it is allowed."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "attention" and isinstance(value, dict) and "anyOf" in value:
                value["anyOf"].insert(-1, {"type": "boolean"})
            else:
                _allow_attention_switch(value)
    elif isinstance(node, list):
        for item in node:
            _allow_attention_switch(item)
