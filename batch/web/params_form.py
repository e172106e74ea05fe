"""A job's params as form fields: one input per property of its params JSON schema, the
posted text read back into params, and validation errors keyed by field. The schedule form
and the "Run a job" form share them (schedules.js draws the same fields when the job
changes).
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.datastructures import MultiDict

from batch.exceptions import UnknownJob
from batch.jobs import Job
from batch.web import current_core, load_json

DATE_TIME_EXAMPLE = "2026-01-31T00:00:00+00:00"
INPUT_OF_TYPE = {"integer": "number", "number": "number", "boolean": "checkbox"}


def job_view(job: Job) -> dict[str, Any]:
    """A job as a form shows it (and as schedules.js redraws the params fields)."""
    return {"description": job.description, "queue": job.queue, "fields": param_fields(job)}


def job_fields(name: str) -> list[dict[str, Any]]:
    """The params fields of the job registered as ``name``; none for an unknown job."""
    try:
        return param_fields(current_core().jobs.get(name))
    except UnknownJob:
        return []


def param_fields(job: Job) -> list[dict[str, Any]]:
    """One input per property of the job's params JSON schema."""
    schema = job.params_model.model_json_schema()
    required = set(schema.get("required", ()))
    properties = schema.get("properties", {})
    return [_param_field(name, prop, name in required) for name, prop in properties.items()]


def _param_field(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    options = [prop, *prop.get("anyOf", [])]
    kind = next((o["type"] for o in options if o.get("type") not in (None, "null")), "string")
    date_time = any(o.get("format") == "date-time" for o in options)
    default = prop.get("default")
    if required:
        hint = "required"
    elif default is None:
        hint = "optional: blank means the job's default"
    else:
        hint = f"default {param_text(default)}"
    return {
        "name": name,
        "label": prop.get("title", name),
        "type": kind,
        "input": INPUT_OF_TYPE.get(kind, "text"),
        "placeholder": DATE_TIME_EXAMPLE if date_time else param_text(default),
        "hint": hint,
        "description": prop.get("description", ""),
        "default": default,
        "minimum": prop.get("minimum"),
        "maximum": prop.get("maximum"),
    }


def param_text(value: Any) -> str:
    """A param's value as its input shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def posted_params(form: MultiDict[str, str], job: str) -> dict[str, str]:
    """The text of each params field of ``job`` as posted (``params.<name>``)."""
    # A checkbox follows a hidden "false" of the same name: the last value wins.
    posted = {spec["name"]: form.getlist(f"params.{spec['name']}") for spec in job_fields(job)}
    return {key: texts[-1] if texts else "" for key, texts in posted.items()}


def given_params(job: str, texts: dict[str, str]) -> dict[str, Any]:
    """The params to validate: blank fields are not given (the job's default applies)."""
    given = {}
    for spec in job_fields(job):
        raw = texts.get(spec["name"], "").strip()
        if raw:
            given[spec["name"]] = param_value(spec["type"], raw)
    return given


def param_value(kind: str, raw: str) -> Any:
    """A param as typed: JSON for arrays and objects; the schema coerces the rest."""
    if kind == "boolean":
        return raw == "true"
    if kind in ("array", "object"):
        try:
            return load_json(raw)  # bounded depth: deep JSON is the schema's error, not ours
        except ValueError:
            return raw
    return raw


def field_errors(errors: dict[str, str]) -> dict[str, str]:
    """Errors keyed by form field: ``priority.int`` -> ``priority``, ``params.n`` kept."""
    keyed: dict[str, str] = {}
    for key, message in errors.items():
        parts = key.split(".")
        short = ".".join(parts[:2]) if parts[0] == "params" else parts[0]
        keyed.setdefault(short, message)
    return keyed
