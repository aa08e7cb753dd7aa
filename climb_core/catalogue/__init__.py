"""The workspace catalogue: folder layout and DuckDB schema, connections, stage records, process liveness."""
