"""One mapping from errors to exit codes and one-line messages, used by all three commands.

``agiqa-distill``, ``agiqa-export`` and ``agiqa-score`` (and the C++ ``agiqa-score-cpp``) exit
with the same codes for the same kind of failure:

==== =============================================================================================
code meaning
==== =============================================================================================
0    done
1    the command ran, but its result failed: an export below its fidelity threshold (the report is
     still written), or no image could be scored
2    bad input or environment, reported in one line naming the file and the fix: a missing or
     malformed file, config or model, a wrong argument (click's usage errors are 2 as well), a
     missing runtime
130  interrupted (Ctrl-C); whatever was written so far is kept
==== =============================================================================================

Errors of any other kind, and errors raised by the torch family itself (torch, torchao,
torchvision: bugs, out of memory), keep their traceback. Standard library only, like the rest of :mod:`_agiqa`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_CODES",
           "EXIT_CODE_MEANINGS",
           "CheckFailedError", "exit_code_for", "error_line", "exit_with", "one_line_errors",
           "exit_codes_help"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CheckFailedError(Exception):
    """The work was done, but its result failed a check the user set (exit 1), e.g. an export
    whose program ranks images worse than ``--min-srcc``. Mixed into such errors."""


# First match wins, so a subclass must come before its base.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (CheckFailedError, EXIT_FAILED),
    (ValueError, EXIT_BAD_INPUT),  # ConfigError, ContractError, DatasetError, StudentLoadError, ...
    (OSError, EXIT_BAD_INPUT),  # a missing or unreadable file, a full disk
    (ImportError, EXIT_BAD_INPUT),  # a missing runtime (RuntimeUnavailableError)
    (RuntimeError, EXIT_BAD_INPUT),  # ExportError, CacheError
)

EXIT_CODE_MEANINGS: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_FAILED: "ran, but the result failed (export below its fidelity threshold, nothing scored)",
    EXIT_BAD_INPUT: "bad input or environment (a missing or malformed file, config, model or "
                    "argument), one line on stderr",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); what was written so far is kept",
}

# Packages whose errors keep their own handling: click/typer's exits and usage errors, and the
# torch family's errors (torch, torchao, torchvision: bugs or resource limits, whose traceback
# is the useful part).
_OWN_HANDLING = frozenset({"click", "typer"})


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for ``exc``, or None when its traceback should be shown instead."""
    package = type(exc).__module__.partition(".")[0]
    if package in _OWN_HANDLING or package.startswith("torch"):
        return None
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), None)


def error_line(exc: BaseException, context: str | None = None) -> str:
    """``error: [context: ]message`` on one line (a multi-line message is joined)."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    message = message or type(exc).__name__
    return f"error: {context}: {message}" if context else f"error: {message}"


def exit_with(exc: BaseException, *, context: str | None = None,
              interrupted: str = "interrupted") -> NoReturn:
    """Print ``exc`` as one line on stderr and exit with its code; re-raise it when it has none.

    Call from an ``except`` block. ``context`` prefixes the message (``cannot load model.pte``);
    ``interrupted`` is the line printed for Ctrl-C."""
    code = exit_code_for(exc)
    if code is None:
        raise exc
    line = f"\n{interrupted}" if code == EXIT_INTERRUPTED else error_line(exc, context)
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code) from None


_Command = TypeVar("_Command", bound=Callable[..., Any])


def one_line_errors(*, interrupted: str = "interrupted") -> Callable[[_Command], _Command]:
    """Decorate a command so that known errors end it with :func:`exit_with`, not a traceback."""

    def decorate(command: _Command) -> _Command:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except (Exception, KeyboardInterrupt) as exc:
                exit_with(exc, interrupted=interrupted)

        return wrapper  # type: ignore[return-value]

    return decorate


def exit_codes_help() -> str:
    """The exit codes as one paragraph, for a command's ``--help`` epilog."""
    return "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODE_MEANINGS.items()) + "."
