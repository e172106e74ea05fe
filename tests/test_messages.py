"""Validation errors worded for people (batch.messages)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from batch.messages import field_messages


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=0, ge=0, le=9)
    ratio: float = 0.0
    flag: bool = False
    code: str = Field(default="a", pattern=r"^[a-z]+$", max_length=5)
    when: AwareDatetime | None = None
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = Field(default_factory=list, max_length=2)

    @model_validator(mode="after")
    def _fast_has_no_tags(self) -> Example:
        if self.mode == "fast" and self.tags:
            raise ValueError("Tags need the slow mode")
        return self


def messages(data: dict[str, object], **patterns: str) -> dict[str, str]:
    with pytest.raises(ValidationError) as refused:
        Example.model_validate(data)
    return field_messages(refused.value, whole="example", patterns=patterns or None)


def test_every_bad_field_gets_one_message_for_people_at_once() -> None:
    assert messages(
        {
            "count": "ten",
            "ratio": "half",
            "flag": "maybe",
            "code": "ABC",
            "when": "2026-12-01T06:00",
            "mode": "quick",
            "tags": ["a", "b", "c"],
            "colour": "red",
        }
    ) == {
        "count": "must be a whole number, not 'ten'",
        "ratio": "must be a number, not 'half'",
        "flag": "must be true or false, not 'maybe'",
        "code": "does not have the expected form (^[a-z]+$)",
        "when": "must name its zone, such as 2026-12-01T06:00:00+00:00 (Z for UTC)",
        "mode": "must be 'fast' or 'slow', not 'quick'",
        "tags": "must have at most 2 items",
        "colour": "not a known field",
    }


def test_bounds_lengths_and_the_model_as_a_whole() -> None:
    assert messages({"count": 10, "code": "abcdef"}) == {
        "count": "must be at most 9",
        "code": "must have at most 5 characters",
    }
    assert messages({"count": -1, "when": "soon"}) == {
        "count": "must be at least 0",
        "when": "must be a date and time with its zone, such as 2026-12-01T06:00:00+00:00,"
        " not 'soon'",
    }
    # The model's own check: its message without pydantic's prefix, in lower case.
    assert messages({"tags": ["a"]}) == {"example": "tags need the slow mode"}


def test_a_pattern_is_worded_by_its_owner_and_long_values_are_not_repeated() -> None:
    with pytest.raises(ValidationError) as refused:
        Example.model_validate({"code": "ABC", "count": "x" * 100})
    found = field_messages(refused.value, whole="example", patterns={r"^[a-z]+$": "lower case"})
    assert found == {"count": "must be a whole number", "code": "lower case"}
