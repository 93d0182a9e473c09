"""One kind of error for bad user input: scripts print it on one line and exit with status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any


class UserError(Exception):
    """Bad input from the user. The message names the file and the fix, on one line."""


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a script's `main` so a `UserError` becomes `error: ...` on stderr and exit status 2."""

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            sys.exit(2)

    return wrapper
