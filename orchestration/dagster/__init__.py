"""A Dagster code location that runs the Meltano pipeline once per shard of the accounts."""
