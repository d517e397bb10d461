"""Group commit (enforcement/lifecycle/batching.py) with real threads: calls that
arrive while a batch runs form the next batch, each caller gets its own
outcome, and a failing batch fails only its own callers."""
import threading
import time

from enforcement.lifecycle.batching import GroupCommit


def test_a_lone_call_runs_at_once_as_a_batch_of_one():
    batches = []
    commit = GroupCommit(lambda jobs: (batches.append(list(jobs)), [j * 2 for j in jobs])[1])
    assert commit.submit(21) == 42
    assert batches == [[21]] and (commit.batches, commit.jobs) == (1, 1)


def test_calls_arriving_during_a_batch_are_run_together_and_each_gets_its_own_result():
    release = threading.Event()
    batches = []

    def run(jobs):
        batches.append(list(jobs))
        if len(batches) == 1:
            release.wait(5)  # the first batch is slow: the others queue up
        return [f"done {j}" for j in jobs]

    commit = GroupCommit(run)
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, commit.submit(n)))
               for n in range(20)]
    threads[0].start()
    time.sleep(0.2)
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)
    release.set()
    for t in threads:
        t.join(5)
    assert results == {n: f"done {n}" for n in range(20)}
    assert batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 20)), "the 19 waiting calls went together"
    assert commit.batches == 2


def test_an_outcome_that_is_an_exception_is_raised_in_its_caller_only():
    commit = GroupCommit(lambda jobs: [ValueError(f"bad {j}") if j < 0 else j for j in jobs])
    assert commit.submit(3) == 3
    try:
        commit.submit(-1)
    except ValueError as exc:
        assert str(exc) == "bad -1"
    else:
        raise AssertionError("the refusal was not raised")


def test_a_batch_that_crashes_fails_its_callers_and_the_next_batch_still_runs():
    calls = []

    def run(jobs):
        calls.append(list(jobs))
        if len(calls) == 1:
            raise RuntimeError("store unavailable")
        return list(jobs)

    commit = GroupCommit(run)
    try:
        commit.submit("a")
    except RuntimeError as exc:
        assert "store unavailable" in str(exc)
    assert commit.submit("b") == "b"


def test_batches_never_exceed_the_limit():
    sizes = []
    gate = threading.Event()

    def run(jobs):
        sizes.append(len(jobs))
        gate.wait(5)
        return list(jobs)

    commit = GroupCommit(run, max_batch=4)
    threads = [threading.Thread(target=commit.submit, args=(n,)) for n in range(13)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(5)
    assert sum(sizes) == 13 and max(sizes) <= 4


def test_many_jobs_from_one_caller_are_cut_into_batches_and_answered_in_order():
    sizes = []
    commit = GroupCommit(lambda jobs: (sizes.append(len(jobs)),
                                       [ValueError(j) if j % 7 == 0 else j for j in jobs])[1],
                         max_batch=16)
    outcomes = commit.submit_many(list(range(1, 51)))
    assert [o if not isinstance(o, ValueError) else "refused" for o in outcomes] == [
        "refused" if n % 7 == 0 else n for n in range(1, 51)]
    assert sizes == [16, 16, 16, 2]


def test_many_jobs_interleave_with_single_calls_of_other_threads():
    gate = threading.Event()
    seen = []

    def run(jobs):
        seen.append(list(jobs))
        if len(seen) == 1:
            gate.wait(5)
        return list(jobs)

    commit = GroupCommit(run, max_batch=8)
    first = threading.Thread(target=commit.submit, args=("first",))
    first.start()
    time.sleep(0.1)
    many = {}
    bulk = threading.Thread(target=lambda: many.setdefault(
        "out", commit.submit_many([f"m{n}" for n in range(20)])))
    bulk.start()
    singles = [threading.Thread(target=commit.submit, args=(f"s{n}",)) for n in range(5)]
    time.sleep(0.1)
    for t in singles:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, bulk, *singles]:
        t.join(5)
    assert many["out"] == [f"m{n}" for n in range(20)]
    done = [j for batch in seen for j in batch]
    assert sorted(done) == sorted(["first", *[f"m{n}" for n in range(20)],
                                   *[f"s{n}" for n in range(5)]])
    assert max(len(b) for b in seen) <= 8
