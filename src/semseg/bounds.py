"""Numbers a user writes as text (environment settings, flags), read within stated bounds.

Every numeric setting has a range a user can read in its refusal: a value past it would start a
server or a job that fails later and less clearly (a memory error at warm-up, a crashed worker).
"""

from __future__ import annotations

from .errors import UserError
from .names import shown

SHOWN_CHARACTERS = 40  # of a refused value: a 5000-digit number is not repeated in full


def shown_value(raw: str) -> str:
    """A refused value for its sentence: escaped as any outside name, and cut if it is long."""
    return shown(raw if len(raw) <= SHOWN_CHARACTERS else raw[:SHOWN_CHARACTERS] + "...")


def whole_number(raw: str, what: str, low: int, high: int) -> int:
    """``raw`` as a whole number from ``low`` to ``high``; ``what`` names it in the sentence that refuses it."""
    rule = f"it must be a whole number from {low} to {high}"
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{what} is '{shown_value(raw)}'; {rule}") from None
    if not low <= value <= high:
        raise UserError(f"{what} is {shown_value(raw)}; {rule}")
    return value
