"""Domain constants shared by the CLI and the Dagster definitions."""

TERMINAL_STATES = ("finished", "crashed", "failed", "killed", "preempted")
#: Every state a W&B run can be in, spelled as the server compares them (lower case).
RUN_STATES = ("finished", "running", "crashed", "failed", "killed", "preempted", "pending")
DEFAULT_WAREHOUSE = "warehouse"
#: Fewest finished runs of a project worth packing their long-form metrics into one file.
COMPACT_MIN_RUNS = 8
DEFAULT_BASE_URL = "https://api.wandb.ai"
RUNS_PARTITIONS = "wandb_runs"
# Runs listed per GraphQL page when discovering runs, and per sensor tick at most (a tick
# must finish well inside Dagster's 60 s limit; the cursor carries the rest to the next tick).
LIST_PAGE_SIZE = 100
SENSOR_MAX_RUNS_PER_TICK = 200
# Sensors list runs whose heartbeat passed their watermark less this much: W&B's filtered
# listings can lag behind state changes by minutes, and a found run is never requested twice.
SENSOR_LOOKBACK_SECONDS = 600
# Runs the finished-runs sensor keeps watching by name while they run (a run marked crashed
# by the server keeps its old heartbeat, so only its name finds it again).
SENSOR_MAX_WATCHED_RUNS = 2000
# Partitions the discovery sensor registers per tick (Dagster adds them in one statement;
# SQLite instances refuse tens of thousands at once). The cursor carries the rest.
DISCOVERY_MAX_PARTITIONS_PER_TICK = 5000
# Partitions one Dagster run exports when a backfill groups them (BackfillPolicy.multi_run).
BACKFILL_PARTITIONS_PER_RUN = 25
# Runs one Dagster run exports at once: a pool of this many worker processes when it holds at
# least 4 runs per worker (a backfill batch), else threads (see export.export_runs).
EXPORT_WORKERS_PER_DAGSTER_RUN = 2
NIGHTLY_CRON = "0 2 * * *"
# W&B runs one Dagster run of the finished-runs sensor exports at most: a tick that finds
# thousands of finished runs launches a bounded number of Dagster runs (each a partition range).
SENSOR_RUNS_PER_DAGSTER_RUN = 25
# The Dagster concurrency pool every W&B-calling step of the deployment takes a slot of.
WANDB_POOL = "wandb"
