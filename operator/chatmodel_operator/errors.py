"""Domain errors. Each carries what went wrong, the field it concerns and how to fix it.

Only ``reconcile.run`` (and the CLI) turn these into conditions, Events and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence


class ChatModelError(Exception):
    """Base class: every error the operator reports to a user."""

    reason: str = "Error"
    permanent: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecError(ChatModelError):
    """The spec is invalid: names the field and the fix."""

    reason = "InvalidSpec"

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}; fix: {fix}")


class SpecErrors(ChatModelError):
    """Several spec errors at once (pydantic reports all of them)."""

    reason = "InvalidSpec"

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(e.message for e in self.errors))


class UnknownModel(ChatModelError):
    """No catalog entry and no readable config.json for the source."""

    reason = "UnknownModel"


class NoFit(ChatModelError):
    """The planner found no placement: the reasons carry the numbers."""

    reason = "DoesNotFit"

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


class Unsupported(ChatModelError):
    """An explicit choice (backend, quantization, mode) cannot serve this model or GPU."""

    reason = "Unsupported"

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}; fix: {fix}")


class EngineBuildFailed(ChatModelError):
    """The engine-build Job failed more often than the retry limit allows."""

    reason = "EngineBuildFailed"


class TransientError(ChatModelError):
    """Something outside us failed in a way worth retrying (API 409/5xx, timeouts)."""

    reason = "Transient"
    permanent = False
