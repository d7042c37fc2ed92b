// A sink, the JavaScript twin of udfs/sinks: log_batch logs one line per partition and counts
// records in the `records_seen` counter.
import * as sluice from "./sluice.js";

const logBatch = sluice.foreachBatch((info, records) => {
  sluice.counter("records_seen", records.length);
  sluice.log("info", `batch ${info.batchId} (time ${info.batchTime}) partition ${info.partition}: ${records.length} records`);
}, { name: "log_batch", in: "bytes" });

export const { abiVersion, functions, sinks } = sluice.exportSinks(logBatch);
