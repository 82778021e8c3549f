"""The warehouse: W&B runs as hive-partitioned Parquet (local or object storage) and a DuckDB
catalog of views over it. Plain Python: no orchestrator import."""

from .api import Warehouse
from .catalog import connect, refresh_catalog, view_statements
from .compaction import CompactResult
from .errors import (
    WarehouseCatalogError,
    WarehouseDataError,
    WarehouseError,
    WarehouseLockError,
    WarehousePathError,
)
from .examples import EXAMPLES
from .export import (
    MetadataResult,
    RunExport,
    delete_run,
    export_run,
    write_run_metadata,
)
from .layout import (
    TABLES,
    RunKey,
    WarehouseRoot,
    decode_partition_value,
    encode_partition_value,
)
from .records import RunRecord
from .series import (
    FULL,
    INCREMENTAL,
    UNCHANGED,
    HistorySource,
    SeriesResult,
    SystemSource,
)
from .state import RunState, iter_run_states, last_exported_step, read_state

__all__ = [
    "EXAMPLES", "FULL", "CompactResult", "INCREMENTAL", "TABLES", "UNCHANGED", "HistorySource", "MetadataResult", "RunExport",
    "RunKey", "RunRecord", "RunState", "SeriesResult", "SystemSource", "Warehouse", "WarehouseCatalogError",
    "WarehouseDataError", "WarehouseError", "WarehouseLockError", "WarehousePathError", "WarehouseRoot", "connect",
    "decode_partition_value", "delete_run", "encode_partition_value", "export_run", "iter_run_states",
    "last_exported_step", "read_state", "refresh_catalog", "view_statements", "write_run_metadata",
]
