"""Pause a real CLI process at one moment, for `kill -9` there: `python pause.py MODULE:ATTR[.ATTR] FLAG <train.py args>`.

Wraps one function (or method) so that its first call writes FLAG (a file) and sleeps until the
test kills the process; then runs `train.py` exactly as the command line would. `TARGET#N` pauses
at the N-th call; `TARGET@checkpoints` only at a call with that argument (an upload to that folder).
`TARGET+after` pauses right after the call returns instead, until the test writes FLAG.go (so that it
can send a signal there and let the process go on).
"""

import importlib
import sys
import time
from pathlib import Path


def main() -> None:
    target, flag, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    target, after, _ = target.partition("+after")
    target, _, only_folder = target.partition("@")
    target, _, nth = target.partition("#")
    calls = []
    module_name, path = target.split(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)

    def paused(*args, **kwargs):
        if not only_folder or only_folder in args or only_folder in kwargs.values():
            calls.append(1)
        if len(calls) == int(nth or 1) and (not only_folder or only_folder in args or only_folder in kwargs.values()):
            if after:
                result = original(*args, **kwargs)
                flag.write_text("paused")
                go = flag.with_suffix(".go")
                while not go.exists():
                    time.sleep(0.02)
                return result
            flag.write_text("paused")
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(owner, name, paused)
    sys.argv = ["train.py", *args]
    from lightsweep.cli import run

    run()


if __name__ == "__main__":
    main()
