// State updaters, the JavaScript twin of udfs/state: running_total (an integer per key) and
// running_count_and_sum ([count, sum] per key, workload W4).
import * as sluice from "./sluice.js";

const sum = (values) => values.reduce((a, b) => a + b, 0);

const runningTotal = sluice.update((values, old) => (old ?? 0) + sum(values), {
  name: "running_total",
  in: "int",
  state: "int",
});

const runningCountAndSum = sluice.update(
  (values, old) => {
    const [count, total] = old ?? [0, 0];
    return [count + values.length, total + sum(values)];
  },
  { name: "running_count_and_sum", in: "int", state: "json" },
);

export const { abiVersion, functions, updaters } = sluice.exportUpdaters(runningTotal, runningCountAndSum);
