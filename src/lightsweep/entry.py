"""The one entry of every command: `python train.py` (and the `lightsweep` script), `evaluate.py`,
`pipelines/register.py` and `pipelines/compare.py`.

`@command("<config>")` on a command's task makes it the task Hydra calls with the composed
`conf/<config>.yaml`, and gives it the command line's contract:

- an error the user can fix (LightsweepError) is one line, `error: <what and the fix>`, on stderr and
  the exit code is 2; with `HYDRA_FULL_ERROR=1` it is raised instead (Hydra prints the traceback);
  any other exception is a bug and keeps its traceback;
- Ctrl-C and SIGTERM, at any moment from composing the config to the last line, exit 130 and 143
  (lightsweep.interrupts: what the task is writing is finished first).

The decorated function is still the task (`task(cfg)` runs it in process, with the same one-line
errors); `task.run()` is the command line.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

import lightsweep.resolvers  # noqa: F401  (conf/ uses them)
from lightsweep import interrupts
from lightsweep.errors import LightsweepError


def exit_code(signal_name: str) -> int:
    """The shell's code for a process a signal ended: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + signal.Signals[signal_name].value


def one_line(err: LightsweepError) -> None:
    """`error: ...` and exit 2, unless HYDRA_FULL_ERROR=1 asks for the traceback (then re-raised)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


def command(config_name: str, *, pause_gc: bool = False) -> Callable[[Callable[[Any], Any]], Any]:
    """Decorator: the task of the command composed from `conf/<config_name>.yaml`.

    `pause_gc`: no garbage collections while the libraries are imported (lightsweep.startup; the
    task must call `resume_gc()` once they are in).
    """
    import hydra

    from lightsweep.config import project_root

    def decorate(function: Callable[[Any], Any]):
        @functools.wraps(function)  # (its module and name: the vectorized launcher recognises train's task)
        def task(cfg):
            try:
                return function(cfg)
            except LightsweepError as err:
                one_line(err)

        main = hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name=config_name)(task)

        def run() -> None:
            """The command line: Hydra parses sys.argv, composes, and calls the task."""
            if pause_gc:
                from lightsweep.startup import pause_gc as pause

                pause()
            with interrupts.handled():
                try:
                    main()
                except KeyboardInterrupt as err:  # outside a run (a run's own are handled in it)
                    name = interrupts.interruption(err) or "SIGINT"
                    print(f"interrupted ({name}): stopped", file=sys.stderr)
                    raise SystemExit(exit_code(name)) from None

        task.run = run
        return task

    return decorate
