"""Hydra's composition errors as one line and exit status 2, like every other bad value.

Hydra reports a bad override (`trainer.epochs=abc`, `trainer.nope=1`, `model=resnet51`, an unquoted
non-ASCII value) in several lines with exit status 1. The entry scripts call their `@hydra.main`
function through `run_hydra_main`, which asks Hydra to raise instead of report, turns errors of
composition (raised before the job started) into `error: <field>...` and exit 2, and hands every
other error back to Hydra's own report. With HYDRA_FULL_ERROR=1 set by the user, Hydra's full
message and traceback are shown unchanged.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

FULL_ERROR = "HYDRA_FULL_ERROR"


def run_hydra_main(main: Callable[[], Any]) -> Any:
    """Call a `@hydra.main` function; bad overrides end in one line and exit status 2."""
    if os.environ.get(FULL_ERROR):
        return main()  # the user asked for Hydra's full message
    os.environ[FULL_ERROR] = "1"  # Hydra raises instead of printing its own report
    try:
        return main()
    except Exception as err:
        if not _started_job(err) and _is_config_error(err):
            _exit_one_line(describe(err, sys.argv[1:]))
        if isinstance(err, OSError) and not _raised_in_task(err):  # Hydra making the run dir
            _exit_one_line(
                f"the run directory cannot be written: {err.filename} ({err.strerror}); "
                "accepted: a writable hydra.run.dir (hydra.sweep.dir with -m)"
            )
        os.environ.pop(FULL_ERROR, None)
        _report_like_hydra(err)
    finally:
        os.environ.pop(FULL_ERROR, None)


def _started_job(err: BaseException) -> bool:
    """True when the error came from inside the job (Hydra's run_job), not from composing it."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "run_job":
            return True
        tb = tb.tb_next
    return False


def _raised_in_task(err: BaseException) -> bool:
    """False when the innermost frame outside the standard library is Hydra's own (its set-up of
    the run directory and log files), True when it is the job's code."""
    import hydra

    stdlib = sysconfig.get_paths()["stdlib"]
    hydra_dir = str(Path(hydra.__file__).parent)
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    outside = [f for f in frames if not f.startswith(stdlib)]
    return not (outside and outside[-1].startswith(hydra_dir))


def _is_config_error(err: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (HydraException, OmegaConfBaseException))


def describe(err: BaseException, argv: list[str]) -> str:
    """One line naming the field, the bad value and what is accepted."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = sorted(err.options)
        close = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}; " if close else ""
        return (
            f"{group.replace('/', '.')}={name!r} is not a preset; {hint}all: {', '.join(options)}"
        )
    if isinstance(err, OverrideParseException):
        bad = _unparsable(argv)
        return (
            f"{bad or 'an override'} cannot be parsed ({_first_line(err)}); accepted: key=value, "
            "with values holding spaces, brackets or non-ASCII characters quoted: key='value'"
        )
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return _describe_field(cause, argv)
    return _first_line(err)


def _describe_field(cause: Any, argv: list[str]) -> str:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = str(cause.full_key)
    given = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=")[0] == key), None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        fields = _fields_beside(cause)
        leaf = key.rpartition(".")[2]
        close = difflib.get_close_matches(leaf, fields, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}; " if close else ""
        where = key.rpartition(".")[0] or "the top level"
        return f"{key} is not a field of {where}; {hint}accepted: {', '.join(fields)}"
    converted = re.search(r"could not be converted to (\w+)", str(cause.msg))
    kind = converted.group(1).lower() if converted else ""
    accepted = f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}" if kind else _first_line(cause)
    value = given if given is not None else cause.value
    return f"{key}={value!r} is not valid; accepted: {accepted}"


def _fields_beside(cause: Any) -> list[str]:
    parent = getattr(cause, "parent_node", None)
    try:
        return [str(k) for k in parent] if parent is not None else []
    except Exception:  # a node that cannot list its keys: name none
        return []


def _unparsable(argv: list[str]) -> str | None:
    """The first command-line override Hydra's grammar refuses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:  # any refusal of the grammar names this argument
            return arg
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _exit_one_line(message: str) -> NoReturn:
    print(f"error: {message} (HYDRA_FULL_ERROR=1 shows Hydra's message)", file=sys.stderr)
    sys.exit(2)


def _report_like_hydra(err: Exception) -> NoReturn:
    """Hydra's own report of an error inside the job (stripped traceback, exit status 1)."""
    from hydra._internal.utils import run_and_report

    def reraise() -> NoReturn:
        raise err

    run_and_report(reraise)
    raise err  # not reached: run_and_report exits
