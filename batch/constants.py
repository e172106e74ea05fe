"""Names shared by every process: queues, task names and Redis key prefixes."""

# The queues configured when BATCH_QUEUES is not set; the shipped jobs declare theirs by name.
# The queues of a running system are Settings.queues, never this tuple.
QUEUE_DEFAULT = "default"
QUEUE_REPORTS = "reports"
QUEUE_CLEANUPS = "cleanups"
DEFAULT_QUEUES = (QUEUE_DEFAULT, QUEUE_REPORTS, QUEUE_CLEANUPS)

# Stable task names: RedBeat stores them as strings in Redis.
TASK_START_RUN = "batch.start_run"
TASK_RUN_CHUNK = "batch.run_chunk"
TASK_FINISH_RUN = "batch.finish_run"
TASK_FAIL_RUN = "batch.fail_run"
TASK_LAUNCH_CHUNKS = "batch.launch_chunks"

# Every Redis key we own starts with one of these.
REDBEAT_KEY_PREFIX = "batch:redbeat:"
WORKER_CAPACITY_KEY_PREFIX = "batch:workers:"
WORKER_NAMES_KEY = "batch:worker-names"
SCHEDULE_LOCK_KEY = "batch:schedule-lock"
LOGIN_ATTEMPTS_KEY_PREFIX = "batch:login-attempts:"
SWEEP_LOCK_KEY = "batch:sweep-lock"
#: Held by the worker node whose thread delivers alerts (batch/alert_delivery.py).
ALERT_DELIVERY_LOCK_KEY = "batch:alert-delivery-lock"
#: Held by the worker node whose thread starts the runs waiting for their turn: backfills'
#: and buffered fires (batch/run_driver.py).
RUN_DRIVER_LOCK_KEY = "batch:run-driver-lock"
#: The active beat's report: its name, when it last ticked and reconciled (batch/health.py).
BEAT_HEALTH_KEY = "batch:beat-health"
#: The newest schedule_changes revision reconcile has applied to this Redis.
RECONCILED_REVISION_KEY = "batch:reconciled-revision"
#: When this Redis's data began (set when missing): messages sent before it are gone.
REDIS_EPOCH_KEY = "batch:redis-epoch"
#: A header in each start and chunk message: when it was sent, as stored in SQL.
SENT_AT_HEADER = "batch_sent_at"
