"""The one error type users see: a single line naming the problem and the fix."""

from __future__ import annotations


class PersonaspaceError(Exception):
    """A problem with the user's input or environment, stated in one line with its fix.

    Library code states the problem in its own terms (``the batch size is 0``); when the
    value came from a parameter, ``param`` names it (``batch_size``) so the command line
    can point at the option that set it. The CLI prints ``str(err)`` (prefixed with the
    option, when it knows one) and exits with status 2; no traceback unless ``--debug``.

    Example:
        >>> err = PersonaspaceError("unknown model 'x'", fix="use one of: smollm2-135m-instruct")
        >>> str(err)
        "unknown model 'x': use one of: smollm2-135m-instruct"
        >>> PersonaspaceError("the batch size is 0", fix="use 1 or more", param="batch_size").param
        'batch_size'
    """

    def __init__(self, problem: str, *, fix: str | None = None, param: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.param = param
        text = problem if fix is None else f"{problem}: {fix}"
        super().__init__(" ".join(text.split()))

    def within(self, where: str) -> PersonaspaceError:
        """The same error, its problem prefixed with where it happened (a file, an item).

        Example:
            >>> str(PersonaspaceError("no turns", fix="add one").within("chat.json"))
            'chat.json: no turns: add one'
        """
        return PersonaspaceError(f"{where}: {self.problem}", fix=self.fix, param=self.param)
