"""The controller's stop signals (controller/process/stopping.py), in real processes:
a SIGTERM stops the main thread's wait whenever it comes, even in the middle
of the wait's own bookkeeping, where a handler that set a threading.Event
deadlocked (a controller that ignored its SIGTERM until SIGKILL)."""
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The signal is raised while the main thread holds the lock the old handler
# (Event.set) takes: `with event._cond` is where Event.wait() holds it. The
# handler runs at the next bytecode, inside that block.
OLD = """
import os, signal, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with stop._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    x = 1
print("stopped", flush=True)
"""
NEW = """
import os, signal
from controller.process.stopping import StopSignals
stop = StopSignals()
os.kill(os.getpid(), signal.SIGTERM)  # before the wait: kept, not lost
print("stopped", signal.Signals(stop.wait()).name, flush=True)
stop.wait()  # and one that comes while it waits
print("stopped again", flush=True)
"""


def run(code: str, *, then_signal: bool = False, timeout: float = 10
        ) -> subprocess.CompletedProcess:
    # From the checkout's root, whose controller/ the code imports (-c puts
    # the working directory first on the path).
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if then_signal:
        assert proc.stdout.readline().startswith("stopped SIGTERM")
        proc.send_signal(15)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, "")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def test_an_event_set_by_the_handler_deadlocks_where_the_wait_holds_its_lock():
    # Why the controller does not do that: this process never prints.
    assert run(OLD, timeout=3).returncode == -9


def test_the_stop_signals_wake_the_wait_whenever_they_come():
    done = run(NEW, then_signal=True)
    assert done.returncode == 0 and done.stdout == "stopped again\n"


# The SIGTERM lands on another thread (the controller has dozens): the main
# thread, blocked reading the pipe, must wake all the same. A SIGHUP first
# wakes it too, and must not count as a stop.
OTHER_THREAD = """
import os, signal, threading, time
from controller.process.stopping import StopSignals
stop = StopSignals()
signal.signal(signal.SIGHUP, lambda *_: print("hangup", flush=True))
def deliver():
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
threading.Thread(target=deliver).start()
print("stopped", signal.Signals(stop.wait()).name, flush=True)
"""


def test_a_stop_signal_delivered_to_another_thread_wakes_the_wait():
    done = run(OTHER_THREAD)
    assert done.returncode == 0 and done.stdout == "hangup\nstopped SIGTERM\n", done
