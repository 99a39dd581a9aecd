"""The one error type users see: a single line naming the problem and the fix."""

from __future__ import annotations


class PersonaspaceError(Exception):
    """A problem with the user's input or environment, stated in one line with its fix.

    The CLI prints ``str(err)`` and exits with status 2; no traceback unless ``--debug``.

    Example:
        >>> err = PersonaspaceError("unknown model 'x'", fix="use one of: smollm2-135m-instruct")
        >>> str(err)
        "unknown model 'x': use one of: smollm2-135m-instruct"
    """

    def __init__(self, problem: str, *, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        text = problem if fix is None else f"{problem}: {fix}"
        super().__init__(" ".join(text.split()))
