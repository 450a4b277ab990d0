#!/usr/bin/env python3
"""Runs one command and appends its wall time and peak resident memory to a TSV file.

    measure.py OUT.tsv LABEL -- command args...

Peak RSS is the largest resident set of the command or any process it waited for
(getrusage RUSAGE_CHILDREN), so it needs nothing installed. The command's own output goes
to the terminal; its exit status is passed on.
"""
import resource
import subprocess
import sys
import time


def main() -> int:
    out, label, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    start = time.monotonic()
    rc = subprocess.call(cmd)
    wall = time.monotonic() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "a", encoding="utf-8") as f:
        f.write(f"{label}\t{wall:.3f}\t{peak_kib}\t{rc}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
