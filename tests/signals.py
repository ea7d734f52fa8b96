"""Child processes that take Ctrl-C as a terminal delivers it, however the suite was started."""

from __future__ import annotations

import sys

# Python's own Ctrl-C handler, installed before the module runs.
_RUN_INTERRUPTIBLE = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def interruptible(module: str, *args: str) -> list[str]:
    """The command line of `python -m module args...` whose process stops on SIGINT.

    A shell starts background jobs with SIGINT ignored (`cmd &`, nohup, many CI runners), the
    children inherit that, and a Python started with SIGINT ignored keeps ignoring it: the
    Ctrl-C a test sends would never arrive. (A `preexec_fn` could reset it too, but is unsafe
    in a test process that runs threads.)
    """
    return [sys.executable, "-c", _RUN_INTERRUPTIBLE, module, *args]
