"""Realistic demo orders for ``reports.sales_summary``."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select

from batch.db import utcnow
from batch.models import Order

REGIONS = ("north", "south", "east", "west", "central")
REGION_WEIGHTS = (0.26, 0.18, 0.22, 0.2, 0.14)
PRODUCTS = {
    "notebook": 450,
    "pen-set": 1_299,
    "backpack": 4_999,
    "desk-lamp": 3_450,
    "headphones": 8_999,
    "monitor": 21_900,
    "keyboard": 6_450,
    "coffee-beans": 1_575,
}
BATCH_ROWS = 50_000
DAYS = 30


def _rows(count: int, end: datetime, rng: random.Random) -> Iterator[dict]:
    products = list(PRODUCTS.items())
    span = DAYS * 86_400
    start = end - timedelta(seconds=span)
    # Sorted timestamps give ids that grow with time, as real orders do.
    offsets = sorted(rng.random() * span for _ in range(count))
    regions = rng.choices(REGIONS, weights=REGION_WEIGHTS, k=count)
    for offset, region in zip(offsets, regions, strict=True):
        product, price = products[rng.randrange(len(products))]
        quantity = 1 + int(rng.expovariate(0.7))
        yield {
            "created_at": start + timedelta(seconds=offset),
            "region": region,
            "product": product,
            "quantity": quantity,
            "amount_cents": quantity * price,
        }


def seed_orders(
    engine: Engine,
    count: int,
    *,
    seed: int = 7,
    end: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    replace: bool = False,
) -> int:
    """Add ``count`` orders spread over the last 30 days (after deleting every order when
    ``replace``, in the same transaction); returns the orders in the table afterwards."""
    rng = random.Random(seed)
    rows = _rows(count, end or utcnow(), rng)
    written = 0
    with engine.begin() as connection:
        if replace:
            connection.execute(delete(Order))
        while written < count:
            batch = [row for _, row in zip(range(BATCH_ROWS), rows, strict=False)]
            connection.execute(insert(Order), batch)
            written += len(batch)
            if progress:
                progress(len(batch))
        return connection.scalar(select(func.count()).select_from(Order))
