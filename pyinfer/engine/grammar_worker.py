"""A grammar worker process: one GrammarBank serving the engine over a socket pair. Constraints compile
on a thread of their own (xgrammar releases the GIL while it compiles), so a large schema holds up no
step; a step's rows are filled straight into the mask buffers the engine shares (a memfd). Exits when
the engine's end of the socket closes. Started by engine/structured_output.py with
`python -m pyinfer.engine.grammar_worker SOCKET_FD MEMFD ROWS WORDS`; the tokenizer's vocabulary, as
xgrammar's JSON, is the first message."""

from __future__ import annotations

import mmap
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import torch

from pyinfer.engine.grammar_bank import GrammarBank
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # the engine stops this process, or its death does
        signal.signal(sig, signal.SIG_IGN)
    socket_fd, memfd, rows, words = (int(arg) for arg in sys.argv[1:5])
    torch.set_num_threads(1)
    conn = Connection(socket_fd)
    masks = torch.frombuffer(mmap.mmap(memfd, 0), dtype=torch.int32).view(2, rows, words)
    import xgrammar as xgr

    bank = GrammarBank(xgr.TokenizerInfo.deserialize_json(conn.recv()))
    sending = threading.Lock()  # replies from the compile thread and from steps
    compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile")

    def reply(message: tuple) -> None:
        with sending:
            conn.send(message)

    def compile_one(key: int, constraint: StructuredOutput) -> None:
        seconds = bank.compile_seconds
        try:
            bank.compile(key, constraint)
        except SamplingParamsError as e:
            reply(("compiled", key, (e.param, e.message), 0.0))
        except Exception as e:  # the request must hear of it, or it waits forever
            reply(("compiled", key, (constraint.param, f"could not be compiled: {e!r}"), 0.0))
        else:
            reply(("compiled", key, None, bank.compile_seconds - seconds))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the engine is gone or done
            break
        if message[0] == "step":
            _, number, makes, accepts, fills, drops, turn = message
            reply(("stepped", number, bank.step(makes, accepts, fills, drops, masks[turn])))
        else:
            _, key, constraint = message
            compiler.submit(compile_one, key, constraint)
    compiler.shutdown(wait=False, cancel_futures=True)  # no one is left to hear of them
    os._exit(0)  # without waiting for a compile under way


if __name__ == "__main__":
    sys.exit(main())
