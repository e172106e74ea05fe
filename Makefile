# The few commands a person types. `make run` and `make test` work on a fresh machine
# with only Python 3.11+ and pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser run test test-production lint format bench bench-beat bench-faults bench-alerts bench-backfill bench-metrics clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

install: $(BIN)/.installed

browser:  ## Chromium and ChromeDriver for the browser tests (apt-get when missing)
	@scripts/ensure-browser

run: install  ## migrate, seed demo data, import schedules/, start web + beat + worker
	$(BIN)/batch dev

test: install browser  ## lint, then the whole test suite against real Redis, worker and database
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

test-production: install browser  ## the suite again on RabbitMQ + PostgreSQL (own vhost and database)
	bash .ci/test-production

lint:
	$(BIN)/ruff check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## engine vs Pool throughput, tiny-run cost, admin page latency
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/web.py

bench-beat: install  ## beat lateness, burst and CPU: batch's beat beside plain RedBeat
	$(BIN)/python bench/beat.py

bench-faults: install  ## every fault N times, batch against the chord alone (docs/reliability.md)
	$(BIN)/python bench/faults.py

bench-alerts: install  ## a soak of schedules on time (false alerts), then beat killed (alert latency)
	$(BIN)/python bench/alerts.py

bench-backfill: install  ## a year of an hourly schedule backfilled: exact, no duplicates, live fires on time
	$(BIN)/python bench/backfill.py

bench-metrics: install  ## a /metrics scrape at 10,000 schedules, each histogram grouping
	for grouping in schedule job off; do $(BIN)/python bench/metrics.py --histograms $$grouping; done

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
