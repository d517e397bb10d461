"""Loaded at start-up by a controller the scale harness starts with this
folder on PYTHONPATH (never by the product): each thread writes its
native id and what it runs to the file $SCALE_THREAD_MAP as it starts, so
that the CPU /proc/PID/task/TID/stat counts per thread can be put to a
name. Python 3.11 gives the kernel no thread names, and OS-Ken's threads
are all "Thread-N": what a thread runs (its target's qualified name) is
the name that says something."""
import os
import threading

_MAP = os.environ.get("SCALE_THREAD_MAP")
_start = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _what(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    name = getattr(target, "__qualname__", None) if target is not None else None
    return name or thread.name


def _bootstrap_inner(self) -> None:
    if _MAP:
        line = f"{threading.get_native_id()} {_what(self)}\n".encode()
        fd = os.open(_MAP, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one short O_APPEND write: whole lines from every thread
        finally:
            os.close(fd)
    _start(self)


if _MAP:
    threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]
