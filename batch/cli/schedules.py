"""``batch schedules``."""

from __future__ import annotations

COMMANDS: list = []
