"""`batch schedules import` of many files: first import, unchanged, and 1% changed.

Usage: python bench/schedules_import.py [--files 10000] [--database-url URL]

Writes N schedule files, then on a private Redis and a fresh database times, in the same run:
parsing and validating the files alone, the old path (one `_store` per file: a lock, a
transaction and Redis writes each) for a first import, and `import_schedules` for a first
import, a re-import with nothing changed and a re-import with 1% of the files changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from batch import migrate, schedules  # noqa: E402
from batch.celery_app import close_celery, create_celery  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.models import Schedule  # noqa: E402
from batch.redis_server import start_private_redis  # noqa: E402
from batch.settings import Settings  # noqa: E402

ACTOR = "bench"


def schedule_toml(index: int, *, edited: bool = False) -> str:
    """One file; every third a cleanup with params, the rest hourly sales summaries."""
    minute = (index + edited) % 60
    if index % 3 == 0:
        return (
            f'job = "cleanups.purge_runs"\ncron = "{minute} 3 * * *"\n'
            f'timezone = "Europe/Berlin"\noverlap = "skip"\n\n[params]\nolder_than_days = 30\n'
        )
    return (
        f'job = "reports.sales_summary"\ncron = "{minute} * * * *"\n'
        f'description = "Sales summary number {index}"\n'
    )


def write_files(folder: Path, count: int) -> None:
    folder.mkdir()
    for index in range(count):
        (folder / f"s-{index:06d}.toml").write_text(schedule_toml(index))


def timed(what: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = what()
    return time.perf_counter() - started, result


def fresh(workdir: Path, name: str, redis_url: str, database_url: str) -> tuple[Core, Any]:
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url or f"sqlite:///{workdir / f'{name}.db'}",
        secret_key="bench-secret-key-0123456789",
    )
    migrate.upgrade(settings.database_url)
    core = Core(settings)
    core.redis.flushdb()
    return core, create_celery(settings, core)


def count_rows(core: Core) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(Schedule))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--database-url", default="", help="an empty database (default: SQLite files)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-import-bench-") as tmp:
        workdir = Path(tmp)
        folder = workdir / "schedules"
        write_files(folder, args.files)
        redis = start_private_redis(workdir / "redis")
        try:
            core, celery = fresh(workdir, "old", redis.url, args.database_url)
            with schedules._no_collection():  # as the import runs it
                parse, files = timed(lambda: schedules.load_schedule_files(core, folder))
            store = schedules._store  # the old path: a lock, a transaction and Redis writes each
            old, _ = timed(
                lambda: [store(core, celery, f.spec, actor=ACTOR, mode="upsert", source=f.source)
                         for f in files if f.spec is not None]
            )  # fmt: skip
            assert count_rows(core) == args.files
            close_celery(celery)
            if args.database_url:
                with core.transaction() as session:
                    session.query(Schedule).delete()
            core, celery = fresh(workdir, "new", redis.url, args.database_url)
            run = lambda: schedules.import_schedules(core, celery, folder, actor=ACTOR)  # noqa: E731
            first, changes = timed(run)
            assert {c.action for c in changes} == {"created"} and count_rows(core) == args.files
            unchanged, changes = timed(run)
            assert {c.action for c in changes} == {"unchanged"}
            for index in range(0, args.files, 100):
                (folder / f"s-{index:06d}.toml").write_text(schedule_toml(index, edited=True))
            some, changes = timed(run)
            updated = sum(c.action == "updated" for c in changes)
            assert updated == len(range(0, args.files, 100)), updated
            close_celery(celery)
        finally:
            redis.stop()

    print(f"{args.files:,} schedule files, {core.engine.dialect.name}, private Redis")
    print(f"parse + validate only           {parse:6.2f} s")
    print(f"old path, one _store per file   {old:6.2f} s  (first import)")
    for label, seconds in (
        ("first import", first),
        ("re-import, nothing changed", unchanged),
        (f"re-import, {updated} changed", some),
    ):
        print(f"{label:<31} {seconds:6.2f} s  {old / seconds:5.1f}x faster than the old path")


if __name__ == "__main__":
    main()
