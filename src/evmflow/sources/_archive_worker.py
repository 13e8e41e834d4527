"""The archive reader's child process (``python -m evmflow.sources._archive_worker``).

Reading an archive is mostly Python work (splitting lines, parsing JSON, building logs), and in
a thread of the indexer it holds the interpreter lock the handlers need. Here it runs beside
them: the parent writes one pickled job to stdin, the child writes frames to stdout, each a
kind byte and a length: marshalled pages, then the end, or an error message.

The child stops when the parent closes the pipe (a write fails) or kills it; it ignores Ctrl-C,
which the terminal also sends to it, since the parent decides when reading ends.
"""

from __future__ import annotations

import gc
import marshal
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import BinaryIO

from .base import BlockHeader, Log, Page

FRAME = struct.Struct("<cQ")
PAGE = b"p"
END = b"e"
ERROR = b"x"  # a SourceError: its message, for the user
CRASH = b"c"  # anything else: the traceback


def write_frame(out: BinaryIO, kind: bytes, body: bytes) -> None:
    out.write(FRAME.pack(kind, len(body)))
    out.write(body)
    out.flush()


def dump_page(page: Page) -> bytes:
    """A page whose logs are rows (``_iter_pages(rows=True)``) as marshalled tuples: several
    times cheaper to write and read than pickled objects (both ends run the same
    interpreter, which marshal needs). Strings the rows share are written once and read back
    as one object."""
    return marshal.dumps(
        (
            page.from_block,
            page.to_block,
            page.logs,
            [(h.number, h.hash, h.parent_hash, h.timestamp) for h in page.blocks.values()],
        )
    )


def load_page(body: bytes) -> Page:
    """The page ``dump_page`` wrote. Builds only acyclic objects, so the cyclic garbage
    collector is held off meanwhile (it would otherwise scan the heap every few hundred)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        from_block, to_block, logs, headers = marshal.loads(body)
        return Page(
            from_block,
            to_block,
            [Log(*fields) for fields in logs],
            {h[0]: BlockHeader(*h) for h in headers},
        )
    finally:
        if collecting:
            gc.enable()


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (the pipe would tell it only at
    its next write)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Frames go to the original stdout; anything printed by accident goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        from ..errors import SourceError
        from .archive import ArchiveSource, _LogStream

        job = pickle.load(sys.stdin.buffer)
        _LogStream.CHUNK_LINES = job["chunk_lines"]
        source = ArchiveSource(
            job["logs_file"],
            job["blocks_file"],
            job["page_blocks"],
            max_page_logs=job["max_page_logs"],
            last_block=job["last_block"],
            unknown_timestamp=job["unknown_timestamp"],
            process=False,
        )
        # Parsing makes short-lived acyclic objects: the cyclic collector, run every few
        # hundred allocations, cost a fifth of this process's time. Every 100 pages will do.
        gc.disable()
        try:
            pages = source._iter_pages(job["from_block"], job["end"], job["filters"], rows=True)
            for n, page in enumerate(pages, 1):
                write_frame(out, PAGE, dump_page(page))
                if n % 100 == 0:
                    gc.collect()
        except SourceError as exc:
            write_frame(out, ERROR, str(exc).encode())
            return
        write_frame(out, END, b"")
    except BrokenPipeError:
        # The parent stopped reading: nothing to report to anyone.
        os._exit(0)
    except BaseException:
        try:
            write_frame(out, CRASH, traceback.format_exc().encode())
        except BrokenPipeError:
            os._exit(0)


if __name__ == "__main__":
    main()
