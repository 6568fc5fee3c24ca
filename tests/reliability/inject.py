"""Fault injection for real CLI processes: `python inject.py MODULE:ATTR[.ATTR] <train.py args>`.

Replaces one function (or class) with one that raises, then runs `train.py` (or `-m` for a sweep)
exactly as the command line would. Used to prove that no run is left RUNNING whatever raises.
"""

import importlib
import sys


def main() -> None:
    target, args = sys.argv[1], sys.argv[2:]
    module_name, path = target.split(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)

    def broken(*_, **__):
        raise RuntimeError(f"injected failure in {target}")

    setattr(owner, name, broken)
    sys.argv = ["train.py", *args]
    from lightsweep.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
