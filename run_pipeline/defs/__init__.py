"""Dagster definitions: the only Dagster-aware layer. Resources build client and warehouse
objects; assets, checks, sensors and schedules call them."""
