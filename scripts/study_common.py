"""What the study scripts share: running one personaspace command in this process."""

from __future__ import annotations

import sys
import time


def cli(*args: str) -> None:
    """Run ``personaspace ARGS...``, print it and its time, stop the study if it fails."""
    from personaspace.cli.main import main

    started = time.perf_counter()
    print(f"\n$ personaspace {' '.join(args)}", flush=True)
    code = main(list(args))
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    if code != 0:
        sys.exit(f"study stopped: `personaspace {' '.join(args)}` exited {code}")
