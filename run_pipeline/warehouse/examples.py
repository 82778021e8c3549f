"""Example questions answered in SQL over the warehouse views, for the README and the demo.

Each entry is name → (description, sql). Parameters are DuckDB named parameters (`$metric`),
passed as a dict: `con.execute(sql, {"metric": "accuracy", "maximize": True}).fetchall()`.
"""

from __future__ import annotations

BEST_RUN_PER_PROJECT = """
SELECT entity, project, run_id, name, value_double AS value
FROM (
    SELECT s.entity, s.project, s.run_id, r.name, s.value_double,
           row_number() OVER (
               PARTITION BY s.entity, s.project
               ORDER BY CASE WHEN $maximize THEN s.value_double ELSE -s.value_double END DESC, s.run_id
           ) AS rank
    FROM run_summary AS s
    JOIN runs AS r USING (entity, project, run_id)
    WHERE s.key = $metric AND s.value_double IS NOT NULL AND NOT isnan(s.value_double)
)
WHERE rank = 1
ORDER BY entity, project
"""

METRIC_CURVE = """
SELECT step, value
FROM metrics
WHERE entity = $entity AND project = $project AND run_id = $run_id AND key = $metric
ORDER BY step
"""

MEAN_OVER_LAST_10_PERCENT = """
WITH m AS (
    SELECT entity, project, run_id, step, value FROM metrics WHERE key = $metric
),
bounds AS (
    SELECT entity, project, run_id, min(step) AS first_step, max(step) AS last_step
    FROM m GROUP BY entity, project, run_id
)
SELECT m.entity, m.project, m.run_id, avg(m.value) AS mean_value, count(*) AS points
FROM m JOIN bounds AS b USING (entity, project, run_id)
WHERE m.step >= b.last_step - (b.last_step - b.first_step) * 0.1
GROUP BY m.entity, m.project, m.run_id
ORDER BY m.entity, m.project, m.run_id
"""

CONFIG_DIFFERS_IN_ONE_KEY = """
WITH config AS (
    SELECT entity, project, run_id, key, CAST(value AS VARCHAR) AS value FROM run_config
),
pairs AS (
    SELECT a.entity, a.project, a.run_id AS run_a, b.run_id AS run_b
    FROM runs AS a JOIN runs AS b ON a.entity = b.entity AND a.project = b.project AND a.run_id < b.run_id
),
keys AS (
    SELECT DISTINCT entity, project, key FROM config
),
differences AS (
    SELECT p.entity, p.project, p.run_a, p.run_b, k.key, ca.value AS value_a, cb.value AS value_b
    FROM pairs AS p
    JOIN keys AS k ON k.entity = p.entity AND k.project = p.project
    LEFT JOIN config AS ca ON ca.entity = p.entity AND ca.project = p.project AND ca.run_id = p.run_a AND ca.key = k.key
    LEFT JOIN config AS cb ON cb.entity = p.entity AND cb.project = p.project AND cb.run_id = p.run_b AND cb.key = k.key
    WHERE ca.value IS DISTINCT FROM cb.value
)
SELECT entity, project, run_a, run_b, any_value(key) AS key,
       any_value(value_a) AS value_a, any_value(value_b) AS value_b
FROM differences
GROUP BY entity, project, run_a, run_b
HAVING count(*) = 1
ORDER BY entity, project, run_a, run_b
"""

EXAMPLES: dict[str, tuple[str, str]] = {
    "best_run_per_project": (
        "Best run of every project by a summary metric ($metric; $maximize true for accuracy-like, "
        "false for loss-like metrics). NaN summaries are ignored.",
        BEST_RUN_PER_PROJECT,
    ),
    "metric_curve": (
        "One metric's curve for one run: (step, value) for $metric of $entity/$project/$run_id.",
        METRIC_CURVE,
    ),
    "mean_over_last_10_percent": (
        "Mean of $metric over the last 10% of the steps where it was logged, for every run "
        "(NaN values make the mean NaN, as they would in the run).",
        MEAN_OVER_LAST_10_PERCENT,
    ),
    "config_differs_in_one_key": (
        "Pairs of runs in the same project whose configs differ in exactly one key (a key "
        "missing from one run counts as a difference), with that key and both values.",
        CONFIG_DIFFERS_IN_ONE_KEY,
    ),
}
