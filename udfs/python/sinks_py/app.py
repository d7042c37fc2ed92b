"""Foreach-batch sinks, in Python. Guests have no files or sockets, so these observe:
`log_batch` logs one line per partition and counts records in the `records_seen` counter;
`log_records` logs every record at debug level. The same as the Rust `udfs/sinks`."""

import sluice


@sluice.foreach_batch
def log_batch(info: sluice.BatchInfo, records: list[bytes]) -> None:
    """Log the size of each partition and count its records."""
    sluice.counter("records_seen", len(records))
    sluice.log.info(
        f"batch {info.batch_id} (time {info.batch_time}) partition {info.partition}: "
        f"{len(records)} records"
    )


@sluice.foreach
def log_records(record: sluice.Record) -> None:
    """Log each record."""
    key = None if record.key is None else record.key.decode("utf-8", "replace")
    sluice.log.debug(f"record key={key!r} value={record.value.decode('utf-8', 'replace')!r}")


WitWorld, Sinks = sluice.export_sinks(log_batch, log_records)
