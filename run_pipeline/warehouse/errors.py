"""Warehouse error taxonomy: one base class, one subclass per kind of problem."""

from __future__ import annotations


class WarehouseError(Exception):
    """Base class of every error the warehouse raises."""


class WarehousePathError(WarehouseError):
    """A root or partition value that cannot be stored safely (bad URI, unencodable, too long)."""


class WarehouseDataError(WarehouseError):
    """Input that breaks the batch contract (no `_step`, steps going backwards, duplicate keys)."""


class WarehouseCatalogError(WarehouseError):
    """The DuckDB catalog could not be written (typically: another process holds its lock)."""


class WarehouseLockError(WarehouseError):
    """Another writer held a run's lock for longer than the caller was willing to wait."""
