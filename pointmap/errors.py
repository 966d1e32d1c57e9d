"""The errors a user can cause (config, data, checkpoint, input files, flags, a diverged run, a missing
optional package), and the check of a free-form config section against the signature it is passed to.

Every user error is a :class:`UserError` (a ValueError): the tools print its message as one line
``error: ...`` and exit 2 (``--debug`` shows the traceback); any other exception is a bug and raises with
its traceback. This module imports nothing from pointmap: every layer may raise these.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Set, Union

__all__ = ["UserError", "UserFileNotFoundError", "MissingPackageError", "UnavailableError", "ConfigError",
           "one_line", "accepted_kwargs", "check_kwargs", "add_debug_flag", "user_errors_exit", "report_user_error"]


class UserError(ValueError):
    """Something the user got wrong; its message is one line that says what and where."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file the user named (or a data set needs) does not exist; the message names its full path."""


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed; the message says how to install it."""


class UnavailableError(UserError, RuntimeError):
    """Something the user asked for (an op backend, a renderer) cannot run on this machine; says why."""


class ConfigError(UserError):
    """A config that cannot be used: unreadable, unknown key, wrong type. The message is one line."""


def one_line(text: Any, limit: Optional[int] = None) -> str:
    """``text`` with its whitespace collapsed to single spaces. With ``limit``, a longer text is cut at the
    last sentence end before it (else the last clause boundary, else the last space) and ends with
    "[... cut]", so that it says so; never in the middle of a word."""
    text = " ".join(str(text).split())
    if limit is None or len(text) <= limit:
        return text
    head = text[:limit + 1]
    for seps in ((". ", "! ", "? "), ("; ", ": ", ", "), (" ",)):
        cut = max(head.rfind(sep) for sep in seps)
        if cut >= limit // 3:
            return head[:cut + (len(seps[0]) > 1)].rstrip(" ,;:") + " [... cut]"
    return head[:limit] + " [... cut]"


def _params(fn: Callable) -> tuple:
    """(names ``fn`` takes by keyword, whether it also takes ``**kwargs``); a class: its ``__init__``'s, walking
    the bases while an ``__init__`` passes ``**kwargs`` on to ``super().__init__``."""
    names: Set[str] = set()
    if inspect.isclass(fn):
        for cls in fn.__mro__:
            if "__init__" not in vars(cls) or cls is object:
                continue
            own, more = _params(vars(cls)["__init__"])
            names |= own - {"self"}
            if not more:
                return names, False
        return names, False
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: anything may be right
        return names, True
    more = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            more = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, more


def accepted_kwargs(fn: Callable, *forwarded_to: Any) -> Optional[Set[str]]:
    """The keyword names ``fn`` accepts: its own and, when it takes ``**kwargs``, those of every target in
    ``forwarded_to`` (where its ``**kwargs`` go, e.g. a builder, then the encoder class the builder passes its
    own ``**kwargs`` to; classes are walked up their bases; a target may also be a set of names already
    collected, or None: any name). None: any name may be right (``fn`` takes ``**kwargs`` and declares no
    target, or the last target takes ``**kwargs`` too)."""
    names, more = _params(fn)
    for target in forwarded_to if more else ():
        if target is None:
            return None
        own, more = (set(target), False) if isinstance(target, (set, frozenset)) else _params(target)
        names |= own
    return None if more else names


def check_kwargs(section: str, owner: str, given: Mapping[str, Any], accepted: Optional[Iterable[str]],
                 fixed: Union[Iterable[str], Mapping[str, str]] = ()) -> None:
    """Raise :class:`ConfigError` for the first key of ``given`` (the config section ``section``, passed to
    ``owner``) that is not in ``accepted`` (None: all are) or is one of ``fixed``: names set elsewhere
    (a mapping: name -> where, e.g. ``{"mask_ratio": "objective.mask_ratio"}``)."""
    fixed = dict(fixed) if isinstance(fixed, Mapping) else {name: "the config itself" for name in fixed}
    for key in given:
        if key in fixed:
            raise ConfigError(f"{section}: argument '{key}' of {owner} is set by {fixed[key]}, not here")
        if accepted is not None and key not in accepted:
            valid = sorted(set(accepted) - set(fixed))
            match = difflib.get_close_matches(str(key), valid + sorted(fixed), n=1, cutoff=0.5)
            hint = f"valid: {', '.join(valid) or 'none'}"
            if match:
                hint = f"did you mean '{match[0]}'?" + (f" it is set by {fixed[match[0]]}" if match[0] in fixed else "")
            raise ConfigError(f"{section}: unknown argument '{key}' of {owner} ({hint})")


# ----------------------------------------------------------------------------- the tools' side

DEBUG_HELP = "on an error in the input (config, data, checkpoint, flags), show the traceback too"


def add_debug_flag(parser) -> None:
    """``--debug`` on an argparse parser: :func:`user_errors_exit` then shows user errors' tracebacks."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


@contextlib.contextmanager
def user_errors_exit(debug: bool = False, code: int = 2) -> Iterator[None]:
    """A :class:`UserError` inside becomes ``error: <message>`` (one line, on stderr) and exit ``code``;
    with ``debug`` its traceback (with its chain of causes) comes first. Anything else propagates."""
    try:
        yield
    except UserError as e:
        report_user_error(e, debug)
        sys.exit(code)


def report_user_error(error: BaseException, debug: bool = False) -> None:
    """Print ``error: <message>`` as one line on stderr; with ``debug`` the traceback (and causes) first."""
    if debug:
        traceback.print_exception(error)
    print(f"error: {one_line(error)}", file=sys.stderr)


def bounded(default: Any, interval: str) -> Any:
    """A dataclass field whose value must lie in ``interval`` (``"[1, inf)"``, ``"(0, 1]"``, ...): the config
    says each bound once, beside the key, and :func:`check_interval` reads it (None, an unset optional
    value, always passes)."""
    import dataclasses

    return dataclasses.field(default=default, metadata={"interval": interval})


def check_interval(key: str, value: Any, interval: str) -> None:
    """A ConfigError naming ``key`` when ``value`` lies outside ``interval`` (see :func:`bounded`)."""
    if value is None:
        return
    low, high = (x.strip() for x in interval[1:-1].split(","))
    below = low != "-inf" and (value < float(low) if interval[0] == "[" else value <= float(low))
    above = high != "inf" and (value > float(high) if interval[-1] == "]" else value >= float(high))
    if below or above:
        raise ConfigError(f"config key '{key}' must be in {interval}, got {value!r}")
