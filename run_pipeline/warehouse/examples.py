"""Example questions answered in SQL over the warehouse views, for the README and the demo.

Each entry is name → `Example` (title, sql, default parameters). Parameters are DuckDB named
parameters (`$metric`), passed as a dict: `con.execute(ex.sql, {**ex.params, "metric": "accuracy"})`.
Every example answers on the built-in sample dataset with its default parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

CONFIG_DIFFERENCES = """
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
SELECT entity, project, run_a, run_b, count(*) AS keys_differing,
       string_agg(key || ' ' || coalesce(value_a, '(unset)') || ' -> ' || coalesce(value_b, '(unset)'), '; '
                  ORDER BY key) AS differences
FROM differences
GROUP BY entity, project, run_a, run_b
HAVING count(*) <= $max_keys
ORDER BY keys_differing, entity, project, run_a, run_b
"""


@dataclass(frozen=True)
class Example:
    """A named question: its SQL, the parameters it takes (with values that give answers on
    the built-in sample dataset) and a title written with those values."""

    title: str
    sql: str
    params: dict[str, Any]

    def describe(self, params: dict[str, Any] | None = None) -> str:
        """The title with the parameters filled in (no `$placeholder` left)."""
        values = {**self.params, **(params or {})}
        return self.title.format(**{k: _show(v) for k, v in values.items()},
                                 direction="highest" if values.get("maximize", True) else "lowest")

    # `description, sql = EXAMPLES[name]` keeps working.
    def __iter__(self):
        return iter((self.describe(), self.sql))


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


EXAMPLES: dict[str, Example] = {
    "best_run_per_project": Example(
        "Best run of every project by summary {metric} ({direction} wins; NaN summaries ignored)",
        BEST_RUN_PER_PROJECT, {"metric": "eval/acc", "maximize": True},
    ),
    "metric_curve": Example(
        "The curve of {metric} for run {entity}/{project}/{run_id}: (step, value)",
        METRIC_CURVE, {"entity": "demo", "project": "llm-finetune", "run_id": "98kbembp", "metric": "train/loss"},
    ),
    "mean_over_last_10_percent": Example(
        "Mean of {metric} over the last 10% of the steps where it was logged, for every run "
        "(a NaN in the window makes the mean NaN)",
        MEAN_OVER_LAST_10_PERCENT, {"metric": "train/loss"},
    ),
    "config_differences": Example(
        "Pairs of runs in one project whose configs differ in at most {max_keys} keys, fewest first "
        "(a key missing from one run counts)",
        CONFIG_DIFFERENCES, {"max_keys": 3},
    ),
}
