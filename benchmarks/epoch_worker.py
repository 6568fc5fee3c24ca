"""speed.py's `--before` worker: lightsweep's epoch timing (b) for another checkout, in its own process.

Started by benchmarks/speed.py with PYTHONPATH=<checkout>/src:benchmarks and LIGHTSWEEP_ROOT=<checkout>,
so `import lightsweep` and conf/ are that checkout's; the timing (speed.run_lightsweep, the
BenchProbe callback) is this tree's, the same as for the current code. It stays up for the whole
epoch section (imports paid once) and idles, blocked on stdin, while speed.py times the other sides.

Protocol, one JSON object per line: first it answers {"lightsweep": <where the package came from>};
then, for each request {"model", "epochs", "tmp"} on stdin, {"steady": {"wall", "cpu"}, "final":
{metric: value}} (or {"error": ...}) on stdout. Everything else a run prints goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    # stdout is the protocol's alone: a copy of it answers, fd 1 itself goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def answer(obj: dict) -> None:
        answers.write(json.dumps(obj) + "\n")

    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        import speed  # this tree's timing code (benchmarks/ is on PYTHONPATH)

        import lightsweep

        root = Path(os.environ["LIGHTSWEEP_ROOT"])
        answer({"lightsweep": str(Path(lightsweep.__file__).resolve().parent)})
    except Exception:
        answer({"error": traceback.format_exc()})
        return
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            steady, final = speed.run_lightsweep(request["model"], int(request["epochs"]), Path(request["tmp"]), root)
            answer({"steady": steady, "final": final})
        except Exception:
            answer({"error": traceback.format_exc()})


if __name__ == "__main__":
    main()
