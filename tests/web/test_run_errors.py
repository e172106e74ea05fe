"""A failed chunk as the admin and the API show it: node, attempts, spec and traceback."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from celery import Celery
from flask.testing import FlaskClient
from sqlalchemy import select

from batch import runs
from batch.core import Core
from batch.models import RunChunk
from tests.conftest import wait_for_run
from tests.test_chunk_errors import E1_CHUNKS, STORED_TRACEBACK, add_failed_run
from tests.test_queries import SUMS

NODE_RE = re.compile(r'<tr data-chunk="(\d+)">.*?<td class="mono node">([^<]*)</td>', re.S)
FAILURE_RE = re.compile(
    r'<tr class="chunk-failure" data-chunk-failure="(\d+)">.*?<details>\s*'
    r"<summary>([^<]*)</summary>\s*"
    r'<pre class="json chunk-spec">([^<]*)</pre>\s*'
    r'<pre class="run-error chunk-traceback">([^<]*)</pre>\s*</details>',
    re.S,
)
SUMMARY_KEYS = [
    "chunks", "chunks_done", "chunks_total", "created_at", "error", "finished_at", "job",
    "params", "result", "run_id", "schedule", "scheduled_for", "started_at", "status", "trigger",
]  # fmt: skip


def failures(page: str) -> list[tuple[int, str, object, str]]:
    """Each failed chunk's <details>: index, summary, spec (parsed) and traceback (unescaped)."""
    return [
        (int(index), summary, json.loads(html.unescape(spec)), html.unescape(traceback))
        for index, summary, spec, traceback in FAILURE_RE.findall(page)
    ]


def test_run_page_shows_each_chunks_node_and_a_failed_ones_spec_and_traceback(
    client: FlaskClient, core: Core
) -> None:
    add_failed_run(core)
    page = client.get("/runs/e1").get_data(as_text=True)
    assert "<th>Node</th>" in page
    assert NODE_RE.findall(page) == [("0", "node-a@h"), ("1", "node-b@h"), ("2", "-")]
    assert failures(page) == [
        (1, "Chunk 1: spec and traceback", {"first": 10, "last": 19}, STORED_TRACEBACK)
    ]


def test_run_page_of_a_chunk_that_failed_on_a_real_worker(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    run_id = runs.submit_run(core, celery_app, SUMS, {"n": 800, "fail_chunk": 500}, trigger="t")
    assert wait_for_run(core, run_id).status == "failed"
    with core.reading() as session:
        chunks = session.scalars(
            select(RunChunk).where(RunChunk.run_id == run_id).order_by(RunChunk.chunk_index)
        ).all()
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert NODE_RE.findall(page) == [(str(c.chunk_index), c.node or "-") for c in chunks]
    failed = next(c for c in chunks if c.chunk_index == 5)
    assert failures(page) == [
        (5, "Chunk 5: spec and traceback", {"first": 500, "last": 599}, failed.traceback)
    ]
    assert failed.traceback.endswith("ValueError: chunk with item 500 failed on purpose\n")


def test_api_run_adds_its_chunks_to_the_same_keys(api: FlaskClient, core: Core) -> None:
    add_failed_run(core)
    response = api.get("/api/runs/e1")
    assert response.status_code == 200
    assert sorted(response.json) == SUMMARY_KEYS
    document = response.json
    assert (document["status"], document["error"]) == ("failed", "chunk 1: ValueError: no")
    assert document["chunks"] == E1_CHUNKS
