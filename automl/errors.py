"""Errors the user can fix: reported as one line and exit code 2, never a traceback."""

import unicodedata


def printable(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\n``, ``\\u202e``): user input
    quoted in a message cannot move the cursor, recolour the terminal or break the message's one line."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf")
                   else ch for ch in text)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several), or its type's name."""
    return " ".join(str(exc).split()) or type(exc).__name__


class UserError(Exception):
    """Bad input (a file, a field, an argument); the message names where and what is allowed."""

    def __init__(self, message: str):
        super().__init__(printable(message))


class SpaceError(UserError):
    """A search-space file is invalid; the message starts with ``FILE:LINE: FIELD:``."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.file, self.line, self.field, self.message = file, line, field, message


class ArchitectureError(UserError):
    """A configuration cannot be built for the given input (e.g. too many downsamplings)."""


class ModelTooLarge(ArchitectureError):
    """A configuration's estimated size exceeds the memory cap; ``part`` is its largest part's dotted path."""

    def __init__(self, part: str, message: str):
        super().__init__(f"{part}: {message}")
        self.part, self.message = part, message


class TrialFailed(Exception):
    """Training of one configuration failed for a recordable reason (NaN loss, out of memory...)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class SearchStopped(Exception):
    """A search stopped because trial after trial failed: the problem is not one configuration."""


class RecipeStopped(Exception):
    """The tuning recipe found a problem that more search cannot fix (e.g. labels without signal)."""

    def __init__(self, stage: str, summary: str):
        super().__init__(f"stopped at the {stage} stage: {summary}")
        self.stage, self.summary = stage, summary
