"""A warm interpreter that forks `python -m rerankd` (or `tests.fault_server`) for the tests.

Most of a test server's start is importing torch and transformers' modelling code (about 3.5 s
of CPU on a 2-core machine, against well under a second for the rest), and the suite starts
some 80 servers. The zygote imports them once per pytest worker, then forks each server from
that warm interpreter: the child is a real, separate process running the real `rerankd serve`
(its own port, log, environment, signals and exit code), only without paying the imports again.

Run as `python -m tests.zygote`; it speaks JSON lines on stdin/stdout, one request at a time:
`{"op": "spawn", "module": "rerankd", "argv": [...], "env": {...}, "cwd": "...", "log": "..."}`
answers the child's pid; `{"op": "status", "pid": N}` answers its exit code, or null while it
runs (the zygote reaps its children, so only it knows). A closed stdin ends the zygote.

Only servers whose test sets nothing but `RERANKD_*` variables are forked (`tests/server.py`
decides): other variables, such as `HF_HOME` or `OMP_NUM_THREADS`, are read by libraries when
they are imported, so a server that needs them starts the ordinary way.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
from typing import Any


def _warm() -> None:
    """Import what every `rerankd serve` imports and what costs most: torch, transformers'
    model loading, and the encoder families the tests serve. Runs no torch op, so torch's
    thread pool does not exist yet to be broken by fork."""
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401
    from transformers.models.bert import modeling_bert  # noqa: F401
    from transformers.models.xlm_roberta import modeling_xlm_roberta  # noqa: F401

    import rerankd.cli  # noqa: F401
    import rerankd.engine.torch_backend  # noqa: F401
    import rerankd.server  # noqa: F401


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `python -m rerankd ARGV` with the request's environment,
    working directory and log. Exits through SystemExit, so the interpreter finalizes (atexit,
    flushes) as a process started the ordinary way does."""
    import runpy

    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = [request["module"], *request["argv"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


def _reap(exits: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        exits[pid] = os.waitstatus_to_exitcode(status)


def main() -> None:
    _warm()
    # A Python thread would be missing in every child: refuse to fork at all. (OpenBLAS's
    # native threads, started when numpy loads, are rebuilt in the child by its fork handlers.)
    if threading.active_count() != 1:
        print(json.dumps({"ready": False, "threads": threading.active_count()}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    exits: dict[int, int] = {}
    stdin = sys.stdin
    while True:
        _reap(exits)
        readable, _, _ = select.select([stdin], [], [], 0.05)
        if not readable:
            continue
        line = stdin.readline()
        if not line:
            return
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(request)  # raises SystemExit: the child never returns to this loop
            answer: object = pid
        else:
            _reap(exits)
            answer = exits.get(int(request["pid"]))
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
