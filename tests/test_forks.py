"""A fork waits for work done in no_fork() to end, so a child never inherits it half-done."""

from __future__ import annotations

import os
import threading
import time

from batch.forks import no_fork


def test_a_fork_during_the_block_happens_after_it() -> None:
    inside, block_done = threading.Event(), []

    def work() -> None:
        with no_fork():
            inside.set()
            time.sleep(0.3)  # the fork below is asked for meanwhile
            block_done.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    assert inside.wait(5)
    pid = os.fork()
    if pid == 0:  # the child's copy of memory: taken after the block, or the test fails
        os._exit(0 if block_done else 1)
    _, status = os.waitpid(pid, 0)
    thread.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_block_can_run_again_after_a_fork() -> None:
    pid = os.fork()
    if pid == 0:
        with no_fork():  # the child's turn is free
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with no_fork():  # and so is the parent's
        pass
