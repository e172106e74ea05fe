"""Errors raised by the core and turned into a 4xx, a form error or a CLI message at the edge."""


class BatchError(Exception):
    """Base class of every error the core raises on purpose."""


class UserError(BatchError):
    """Bad input from a person or a program: reported, never a traceback."""


class UnknownJob(UserError):
    """The job name is not registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown job {name!r}")
        self.name = name


class InvalidParams(UserError):
    """Params do not match the job's params schema.

    ``errors`` maps a field name to its message.
    """

    def __init__(self, job: str, errors: dict[str, str]) -> None:
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        super().__init__(f"invalid params for {job}: {detail}")
        self.errors = errors

    def body_errors(self) -> dict[str, str]:
        """The errors keyed by their path in a request body: ``params.n``, or ``params``."""
        return {k if k == "params" else f"params.{k}": v for k, v in self.errors.items()}


class InvalidSchedule(UserError):
    """A schedule definition is malformed (cron, timezone, interval, name, ...).

    ``errors`` maps a field name to its message.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        super().__init__(f"invalid schedule: {detail}")
        self.errors = errors


class InvalidFilter(UserError):
    """Filters of a list are bad: ``errors`` maps each bad one's name to its message, and
    the message names them all."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class NotFound(UserError):
    """A run or schedule with that identifier does not exist."""


class Conflict(UserError):
    """The object already exists (for example a schedule with the same name)."""


class ServiceUnavailable(BatchError):
    """The broker, Redis or the database did not answer: try again later (not bad input)."""
