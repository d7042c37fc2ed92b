// Reducers, the JavaScript twin of udfs/aggregates: sum_i64 (with inverse) and count_and_sum
// over JSON [count, sum] pairs (with inverse). Numbers are JS numbers: exact to 2^53.
import * as sluice from "./sluice.js";

const sumI64 = sluice.reduce((a, b) => a + b, { name: "sum_i64", in: "int", inverse: (a, b) => a - b });

const countAndSum = sluice.reduce((a, b) => [a[0] + b[0], a[1] + b[1]], {
  name: "count_and_sum",
  in: "json",
  inverse: (a, b) => [a[0] - b[0], a[1] - b[1]],
});

export const { abiVersion, functions, reducers } = sluice.exportReducers(sumI64, countAndSum);
