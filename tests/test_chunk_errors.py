"""Errors an operator can act on: a failed chunk's traceback (bounded), spec, node and attempts,
shown by ``batch runs show``; worker log lines that name the run and the chunk; and one honest
warning, not a traceback, when a worker process dies mid-chunk and the chunk is sent again."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery

from batch import queries, runs
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.lab import Lab
from batch.models import RunChunk
from tests.conftest import ROOT, wait_for_run
from tests.test_cli import cli
from tests.test_queries import SUMS, T0, add_run
from tests.test_recovery import RECOVERY_SECONDS, lab  # noqa: F401  (lab: a fixture)

SUM_FAILURE = "ValueError: chunk with item 500 failed on purpose"
DEEP_FAILURE = "LookupError: item 500: nothing down here"
STORED_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "job.py", line 7, in process\n'
    "    raise ValueError('no')\n"
    "ValueError: no\n"
)
FRAME_RE = re.compile(r'^  File "([^"]+)", line \d+, in (\w+)$', re.M)
CUT_RE = re.compile(r"^\[\.\.\. (\d+) characters cut \.\.\.\]\n", re.M)


def add_failed_run(core: Core) -> None:
    """Run "e1" of three chunks: 0 stored on node-a, 1 failed twice on node-b, 2 pending."""
    add_run(core, "e1", status="failed", chunk_count=3, error="chunk 1: ValueError: no")
    quarter = timedelta(milliseconds=250)
    with core.transaction() as session:
        session.add_all(
            [
                RunChunk(run_id="e1", chunk_index=0, status="succeeded", attempts=1,
                         node="node-a@h", spec={"first": 0, "last": 9}, partial={"sum": 285},
                         started_at=T0, finished_at=T0 + quarter),
                RunChunk(run_id="e1", chunk_index=1, status="failed", attempts=2,
                         node="node-b@h", spec={"first": 10, "last": 19},
                         error="ValueError: no", traceback=STORED_TRACEBACK,
                         started_at=T0, finished_at=T0 + quarter),
                RunChunk(run_id="e1", chunk_index=2, status="pending", attempts=0,
                         spec={"first": 20, "last": 29}),
            ]
        )  # fmt: skip


#: ``run_summary``'s chunks for run "e1": spec and traceback of the failed chunk only.
E1_CHUNKS = [
    {
        "index": 0, "status": "succeeded", "attempts": 1, "node": "node-a@h",
        "started_at": "2026-03-01T12:00:00+00:00",
        "finished_at": "2026-03-01T12:00:00.250000+00:00",
        "error": None, "spec": None, "traceback": None,
    },
    {
        "index": 1, "status": "failed", "attempts": 2, "node": "node-b@h",
        "started_at": "2026-03-01T12:00:00+00:00",
        "finished_at": "2026-03-01T12:00:00.250000+00:00",
        "error": "ValueError: no", "spec": {"first": 10, "last": 19},
        "traceback": STORED_TRACEBACK,
    },
    {
        "index": 2, "status": "pending", "attempts": 0, "node": None,
        "started_at": None, "finished_at": None,
        "error": None, "spec": None, "traceback": None,
    },
]  # fmt: skip


def chunk_row(core: Core, run_id: str, index: int) -> RunChunk:
    with core.reading() as session:
        chunk = session.get(RunChunk, (run_id, index))
        assert chunk is not None
        return chunk


def wait_for_log(path: Path, pattern: str, timeout: float = 10) -> list[str]:
    """The lines of the log at ``path`` that match ``pattern``, once there is one."""
    deadline = time.monotonic() + timeout
    while not (found := re.findall(pattern, path.read_text(), re.M)):
        assert time.monotonic() < deadline, f"no log line matches {pattern!r}"
        time.sleep(0.1)
    return found


# The bound


def test_a_traceback_within_the_limit_is_kept_whole() -> None:
    text = "Traceback (most recent call last):\nValueError: no\n"
    assert runs.cut_middle(text, len(text)) == text


def test_a_long_traceback_keeps_whole_lines_of_its_head_and_tail() -> None:
    text = "".join(f"line {i:03d}\n" for i in range(100))  # 900 characters
    # Head: a quarter of 200, cut back to a line end (5 lines). Tail: what the marker's
    # room leaves (91), cut forward to a line start (10 lines).
    assert runs.cut_middle(text, 200) == (
        "line 000\nline 001\nline 002\nline 003\nline 004\n"
        "[... 765 characters cut ...]\n" + "".join(f"line {i:03d}\n" for i in range(90, 100))
    )
    assert runs.cut_middle("x" * 1000, 200) == (
        "x" * 50 + "\n[... 864 characters cut ...]\n" + "x" * 86
    )
    assert runs.MAX_TRACEBACK_CHARS == 8000


# A failed chunk, through a real worker


def test_a_failed_chunk_stores_its_error_traceback_spec_node_and_attempts(
    core: Core, celery_app: Celery, worker: Path
) -> None:
    run_id = runs.submit_run(core, celery_app, SUMS, {"n": 800, "fail_chunk": 500}, trigger="test")
    assert wait_for_run(core, run_id).status == "failed"
    chunk = chunk_row(core, run_id, 5)
    assert (chunk.status, chunk.attempts, chunk.error, chunk.spec, chunk.node) == (
        "failed", 1, SUM_FAILURE, {"first": 500, "last": 599},
        f"test-worker@{socket.gethostname()}",
    )  # fmt: skip
    # Where it failed: from the engine down to the job's raise, not Celery's frames.
    assert chunk.traceback.startswith("Traceback (most recent call last):\n")
    assert chunk.traceback.endswith(f"\n{SUM_FAILURE}\n")
    assert FRAME_RE.findall(chunk.traceback) == [
        (str(ROOT / "batch" / "runs.py"), "run_chunk"),
        (str(ROOT / "tests" / "jobs_for_tests.py"), "process"),
    ]
    with core.reading() as session:
        chunks = runs.run_summary(session, queries.find_run(session, run_id))["chunks"]
    assert chunks[5] == {
        "index": 5, "status": "failed", "attempts": 1, "node": chunk.node,
        "started_at": chunk.started_at.isoformat(), "finished_at": chunk.finished_at.isoformat(),
        "error": SUM_FAILURE, "spec": {"first": 500, "last": 599}, "traceback": chunk.traceback,
    }  # fmt: skip
    assert [c["index"] for c in chunks] == list(range(8))
    assert all(c["spec"] is c["traceback"] is None for c in chunks if c["index"] != 5)
    # The worker's own lines name the run and the chunk; Celery's do too (the task's shadow).
    wait_for_log(worker, rf"\] run {run_id} chunk 5 failed on attempt 1: {re.escape(SUM_FAILURE)}$")
    wait_for_log(
        worker,
        rf"\] Task run {run_id} chunk 5\[[0-9a-f-]+\] raised unexpected: "
        rf"ValueError\('chunk with item 500 failed on purpose'\)$",
    )
    wait_for_log(worker, rf"INFO/ForkPoolWorker-\d+\] run {run_id} chunk 0 stored on attempt 1 in ")


@pytest.fixture
def deep_lab(lab: Lab) -> Iterator[Lab]:  # noqa: F811
    """The recovery lab with the job ``tests.deep_failure`` on its nodes and its core."""
    settings = replace(
        lab.settings, job_modules=(*lab.settings.job_modules, "tests.jobs_for_errors")
    )
    core = Core(settings)
    deep = replace(lab, settings=settings, core=core, celery=create_celery(settings, core))
    yield deep  # its nodes are the lab's: the lab stops them
    close_celery(deep.celery)


def test_a_long_traceback_is_stored_as_its_head_and_tail(deep_lab: Lab) -> None:
    deep_lab.start_node("node-a")
    run_id = runs.submit_run(
        deep_lab.core, deep_lab.celery, "tests.deep_failure", {"depth": 300}, trigger="test"
    )
    run = wait_for_run(deep_lab.core, run_id, timeout=RECOVERY_SECONDS)
    assert (run.status, run.error) == ("failed", f"chunk 5: {DEEP_FAILURE}")
    chunk = chunk_row(deep_lab.core, run_id, 5)
    stored = chunk.traceback
    assert (chunk.error, chunk.attempts) == (DEEP_FAILURE, 1)
    # 300 frames take some 27,000 characters: the bound keeps nearly all of its 8,000.
    assert runs.MAX_TRACEBACK_CHARS - 150 <= len(stored) <= runs.MAX_TRACEBACK_CHARS
    head, cut, tail = CUT_RE.split(stored)
    assert len(head) + int(cut) + len(tail) > 3 * runs.MAX_TRACEBACK_CHARS
    assert len(head) <= runs.MAX_TRACEBACK_CHARS // 4
    # The head holds the first cause, whole; the tail the innermost frames and the exception.
    assert head.startswith(
        "Traceback (most recent call last):\n"
        f'  File "{ROOT / "tests" / "jobs_for_errors.py"}", line '
    )
    assert "ValueError: invalid literal for int() with base 10: 'item 500'\n" in head
    assert "The above exception was the direct cause of the following exception:" in head
    assert tail.endswith(f"\n{DEEP_FAILURE}\n")
    # Cut at line ends: each side is whole lines (a frame line starts "  File", code "    ").
    assert head.endswith("\n") and tail.startswith("  ")
    assert FRAME_RE.findall(tail)[-2:] == [
        (str(ROOT / "tests" / "jobs_for_errors.py"), "_up"),
        (str(ROOT / "tests" / "jobs_for_errors.py"), "_down"),
    ]


# A worker process killed mid-chunk


def test_a_killed_worker_process_is_one_warning_naming_the_run_and_chunk(
    lab: Lab,  # noqa: F811
) -> None:
    lab.settings = replace(lab.settings, chunk_max_attempts=2)
    lab.start_node("node-a")
    run_id = runs.submit_run(
        lab.core, lab.celery, "tests.slow_squares", {"n": 800, "seconds": 0, "die_at": 500},
        trigger="test",
    )  # fmt: skip
    run = wait_for_run(lab.core, run_id, timeout=RECOVERY_SECONDS)
    assert run.status == "failed"
    log_path = lab.directory / "node-a.log"
    # The chunk holding item 500 killed its process twice; each time its message went back
    # to the queue; the third delivery found it out of attempts.
    wait_for_log(log_path, rf"ERROR/ForkPoolWorker-\d+\] run {run_id} chunk 5: started 2 times")
    lost = re.findall(r"^\[[^]]+: (\w+)/MainProcess\] (.*lost its worker process.*)$",
                      log_path.read_text(), re.M)  # fmt: skip
    line = (
        rf"Task run {run_id} chunk 5\[[0-9a-f-]+\] lost its worker process \(Worker exited"
        r" prematurely: signal 9 \(SIGKILL\) Job: \d+\.\): the message is back in its queue"
        r" and will be delivered again"
    )
    assert [level for level, _ in lost] == ["WARNING", "WARNING"]
    assert all(re.fullmatch(line, message) for _, message in lost), lost
    log = log_path.read_text()
    assert "Traceback" not in log and "Task handler raised error" not in log, log[-3000:]


# batch runs show


def test_runs_show_prints_each_chunk_and_a_failed_ones_spec_and_traceback(core: Core) -> None:
    add_failed_run(core)
    code, out, _ = cli(core, "runs", "show", "e1")
    assert code == 0
    before, chunks = out.split("chunks:\n")
    assert before.startswith("run_id: e1\njob: tests.sum_squares\nstatus: failed\n")
    assert before.endswith("result: -\nerror: chunk 1: ValueError: no\n")
    assert chunks == (
        "    0  succeeded  attempts 1  node-a@h  0.25s\n"
        "    1  failed     attempts 2  node-b@h  0.25s  ValueError: no\n"
        '       spec: {"first": 10, "last": 19}\n'
        "       Traceback (most recent call last):\n"
        '         File "job.py", line 7, in process\n'
        "           raise ValueError('no')\n"
        "       ValueError: no\n"
        "    2  pending    attempts 0  -  -\n"
    )


def test_runs_show_json_adds_the_chunks_to_the_same_keys(core: Core) -> None:
    add_failed_run(core)
    code, out, _ = cli(core, "runs", "show", "e1", "--json")
    shown = json.loads(out)
    assert code == 0
    assert list(shown) == [
        "run_id", "job", "status", "trigger", "schedule", "scheduled_for", "params",
        "chunks_done", "chunks_total", "created_at", "started_at", "finished_at", "result",
        "error", "chunks",
    ]  # fmt: skip
    assert (shown["chunks_done"], shown["chunks_total"]) == (1, 3)
    assert shown["chunks"] == E1_CHUNKS


def test_an_error_raised_while_the_process_stops_is_not_the_chunks() -> None:
    # A pool process told to stop gets SystemExit from its signal handler, wherever it is:
    # inside SQLAlchemy's commit, the library then fails on its own half-done state.
    def broken_commit() -> None:
        try:
            raise SystemExit(-15)
        except SystemExit:
            raise AssertionError from None  # "from None" still keeps __context__

    with pytest.raises(AssertionError) as caught:
        broken_commit()
    stop = runs.stopping_cause(caught.value)
    assert isinstance(stop, SystemExit) and stop.code == -15
    assert runs.stopping_cause(ValueError("the job's own error")) is None
    chained = ValueError("outer")
    chained.__context__ = KeyboardInterrupt()
    assert isinstance(runs.stopping_cause(chained), KeyboardInterrupt)
