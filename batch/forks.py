"""Work that never straddles a ``fork`` of its process.

A worker node forks a new pool process whenever one dies, while its recovery sweep runs in a
thread. A child forked in the middle of a pass inherits every lock the pass held at that
instant (an import's module lock, a half-built engine's) with no thread left to release
them, and hangs the first time it needs the same one: its task never runs. Work done in
``no_fork()`` and forks of the process take turns instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_turn = threading.Lock()
# Uncontended, a fork takes and gives back a free lock: it waits only for a block in progress.
os.register_at_fork(
    before=_turn.acquire, after_in_parent=_turn.release, after_in_child=_turn.release
)


@contextmanager
def no_fork() -> Iterator[None]:
    """Run the block with no ``os.fork()`` of this process during it: a fork waits for the
    block to end. Never fork inside the block (it would wait for itself)."""
    with _turn:
        yield
