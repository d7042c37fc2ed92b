// Write Sluice UDFs in JavaScript (issue 18): the same worlds of wit/udf.wit as the Rust and
// Python SDKs, built by @bytecodealliance/componentize-js with its WASI features off.
//
//   import * as sluice from "./sluice.js";
//
//   const splitWords = sluice.flatMap((line) => line.split(/\s+/).filter((w) => w), { name: "split_words" });
//   const pairOne = sluice.map((word) => [word, 1], { name: "pair_one" });
//
//   export const { abiVersion, functions, transforms } = sluice.exportTransforms(splitWords, pairOne);
//
// JavaScript has no parameter types, so each function names how its input is read: `in:` one
// codec (`"text"`, the default; `"bytes"`, `"int"`, `"float"`, `"bool"`, `"json"`), a pair
// `["text", "int"]` for keyed records, or `"record"` for the raw record. What a function returns
// is written by its type: a string as UTF-8, a Uint8Array as is, a number or bigint as decimal
// text (integers without `.0`, as Rust prints them), a boolean as `true`/`false`, a plain object
// or `sluice.json(x)` as compact JSON; a two-item array `[key, value]` is a keyed record and
// `sluice.timed(ms, record)` sets the event time. Columns are decoded in bulk: an ASCII column is
// decoded once and sliced, so string built-ins run over ready strings (byte loops in JS are ~40x
// slower than string built-ins here). A thrown error fails the call with its message and the
// index of the record it was thrown for.

export const ABI_VERSION = 1;

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** Whether `value` is bytes. `instanceof Uint8Array` is false for the arrays the component's
 * bindings make (another realm's constructor), so the tag is checked. */
function isBytes(value) {
  return ArrayBuffer.isView(value) && Object.prototype.toString.call(value) === "[object Uint8Array]";
}

/** A failure the host is told about: a message and, when known, the input record's index. */
export class UdfFailure extends Error {
  constructor(message, recordIndex) {
    super(message);
    this.recordIndex = recordIndex;
  }
}

class Json {
  constructor(value) {
    this.value = value;
  }
}

class Timed {
  constructor(eventTime, record) {
    this.eventTime = eventTime;
    this.record = record;
  }
}

/** A value written as one JSON document whatever its type (`json([1, 2])` is a JSON array). */
export function json(value) {
  return new Json(value);
}

/** A record with its own event time (milliseconds since the Unix epoch). */
export function timed(eventTime, record) {
  return new Timed(eventTime, record);
}

function describe(error) {
  if (error instanceof Error) {
    return `${error.name}: ${error.message}`;
  }
  return String(error);
}

// ---------------------------------------------------------------------------------------------
// Reading columns

function items(column, what) {
  const { data, ends } = column;
  const out = new Array(ends.length);
  let start = 0;
  for (let i = 0; i < ends.length; i++) {
    const end = ends[i];
    if (end < start || end > data.length) {
      throw new UdfFailure(
        `malformed ${what} column from the host: item ${i} ends at ${end}, after ${start}, in ${data.length} bytes`,
      );
    }
    out[i] = data.subarray(start, end);
    start = end;
  }
  return out;
}

function texts(column, what, where) {
  const { data, ends } = column;
  let whole = null;
  try {
    whole = decoder.decode(data);
  } catch {
    whole = null;
  }
  if (whole !== null && whole.length === data.length) {
    // ASCII: byte offsets are string offsets.
    const out = new Array(ends.length);
    let start = 0;
    for (let i = 0; i < ends.length; i++) {
      const end = ends[i];
      if (end < start || end > data.length) {
        throw new UdfFailure(
          `malformed ${what} column from the host: item ${i} ends at ${end}, after ${start}, in ${data.length} bytes`,
        );
      }
      out[i] = whole.slice(start, end);
      start = end;
    }
    return out;
  }
  const raw = items(column, what);
  return raw.map((bytes, i) => {
    try {
      return decoder.decode(bytes);
    } catch {
      throw new UdfFailure(`${where} ${i}: ${what} expected UTF-8 text`, i);
    }
  });
}

function parseInt64(text) {
  const t = text.trim();
  if (!/^[+-]?\d+$/.test(t)) throw new Error(`${JSON.stringify(text)} is not an integer`);
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : BigInt(t);
}

function parseFloat64(text) {
  const n = Number(text.trim());
  if (Number.isNaN(n) && !/^\s*[+-]?nan\s*$/i.test(text)) throw new Error(`${JSON.stringify(text)} is not a float`);
  return n;
}

function parseBool(text) {
  const t = text.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  throw new Error(`${JSON.stringify(text)} is neither true nor false`);
}

const PARSERS = {
  text: null,
  int: parseInt64,
  float: parseFloat64,
  bool: parseBool,
  json: JSON.parse,
};

function decodeColumn(codec, column, what, where) {
  if (codec === "bytes") return items(column, what);
  if (!(codec in PARSERS)) {
    throw new TypeError(`no codec named ${JSON.stringify(codec)}: use text, bytes, int, float, bool or json`);
  }
  const strings = texts(column, what, where);
  const parse = PARSERS[codec];
  if (parse === null) return strings;
  const out = new Array(strings.length);
  for (let i = 0; i < strings.length; i++) {
    try {
      out[i] = parse(strings[i]);
    } catch (e) {
      throw new UdfFailure(`${where} ${i}: ${what} expected ${codec}: ${describe(e)}`, i);
    }
  }
  return out;
}

function checkCodec(codec, where) {
  const known = ["text", "bytes", "int", "float", "bool", "json", "record"];
  const ok = Array.isArray(codec)
    ? codec.length === 2 && codec.every((c) => known.includes(c) && c !== "record")
    : known.includes(codec);
  if (!ok) {
    throw new TypeError(
      `${where}: in: ${JSON.stringify(codec)} is not a codec: use one of ${known.join(", ")} or a [key, value] pair of them`,
    );
  }
}

/** The input records of a batch, read as `codec` says. */
function readRecords(codec, batch) {
  const n = batch.values.ends.length;
  const keys = batch.keys;
  if ((keys && keys.ends.length !== n) || batch.eventTimes.length !== n) {
    throw new UdfFailure(
      `malformed batch from the host: ${n} values, ${keys ? keys.ends.length : 0} keys, ${batch.eventTimes.length} event times`,
    );
  }
  if (codec === "record") {
    const keyItems = keys ? items(keys, "key") : null;
    const valueItems = items(batch.values, "value");
    return valueItems.map((value, i) => ({
      key: keyItems ? keyItems[i] : undefined,
      value,
      eventTime: batch.eventTimes[i],
      index: i,
    }));
  }
  if (Array.isArray(codec)) {
    if (!keys) {
      if (n === 0) return [];
      throw new UdfFailure("record 0: the function reads (key, value) pairs but the stream is not keyed", 0);
    }
    const k = decodeColumn(codec[0], keys, "key", "record");
    const v = decodeColumn(codec[1], batch.values, "value", "record");
    return k.map((key, i) => [key, v[i]]);
  }
  return decodeColumn(codec, batch.values, "value", "record");
}

// ---------------------------------------------------------------------------------------------
// Writing columns

/** A float as Rust's `Display` writes it (no `.0` on whole numbers, `NaN`, `inf`). */
function formatNumber(x) {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (Object.is(x, -0)) return "-0";
  return String(x);
}

function encodeText(value) {
  switch (typeof value) {
    case "string":
      return value;
    case "number":
      return formatNumber(value);
    case "bigint":
      return value.toString();
    case "boolean":
      return value ? "true" : "false";
    default:
      return null;
  }
}

function encodeOne(value) {
  const text = encodeText(value);
  if (text !== null) return encoder.encode(text);
  if (isBytes(value)) return value;
  if (value instanceof Json) return encoder.encode(stringify(value.value));
  if (value === undefined || value === null) {
    throw new UdfFailure(
      "the function returned nothing where a value was expected (a flatMap returns [] to emit nothing; a map must return a value)",
    );
  }
  if (typeof value === "object") return encoder.encode(stringify(value));
  throw new UdfFailure(`could not encode output: a ${typeof value} is not a value`);
}

function stringify(value) {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? Number(v) : v));
}

/** A column of `values`, each written by its type; all-text ASCII columns are encoded once. */
function column(values) {
  const strings = new Array(values.length);
  let allText = true;
  for (let i = 0; i < values.length; i++) {
    const t = encodeText(values[i]);
    if (t === null) {
      allText = false;
      break;
    }
    strings[i] = t;
  }
  if (allText) {
    const joined = strings.join("");
    const data = encoder.encode(joined);
    if (data.length === joined.length) {
      const ends = new Uint32Array(strings.length);
      let n = 0;
      for (let i = 0; i < strings.length; i++) {
        n += strings[i].length;
        ends[i] = n;
      }
      return { data, ends };
    }
  }
  const parts = values.map(encodeOne);
  let size = 0;
  for (const p of parts) size += p.length;
  const data = new Uint8Array(size);
  const ends = new Uint32Array(parts.length);
  let at = 0;
  parts.forEach((p, i) => {
    data.set(p, at);
    at += p.length;
    ends[i] = at;
  });
  return { data, ends };
}

/** An output batch of `records` with the event times in `times` (BigInt), unless they carry their own. */
function batchOf(records, times) {
  const outTimes = new BigInt64Array(records.length);
  const plain = new Array(records.length);
  let keyed = null;
  for (let i = 0; i < records.length; i++) {
    let record = records[i];
    let time = times[i];
    while (record instanceof Timed) {
      time = BigInt(record.eventTime);
      record = record.record;
    }
    if (record && typeof record === "object" && "index" in record && "value" in record && isBytes(record.value)) {
      // A raw input record, passed through.
      time = record.eventTime;
      record = record.key === undefined ? record.value : [record.key, record.value];
    }
    const isPair = Array.isArray(record);
    if (keyed === null) keyed = isPair;
    else if (keyed !== isPair) {
      throw new UdfFailure(
        "the function emitted keyed and unkeyed records in one batch; a stream is either keyed or not",
      );
    }
    if (isPair && record.length !== 2) {
      throw new UdfFailure(
        `a keyed record is a [key, value] pair; the function emitted an array of ${record.length} items (wrap a JSON array in sluice.json(...))`,
      );
    }
    plain[i] = record;
    outTimes[i] = time;
  }
  if (keyed) {
    return {
      keys: column(plain.map((r) => r[0])),
      values: column(plain.map((r) => r[1])),
      eventTimes: outTimes,
    };
  }
  return { keys: undefined, values: column(plain), eventTimes: outTimes };
}

/** What one call of a flatMap (mapPartitions, mapWithState) emits: an array (or other
 * iterable) of records, or nothing. One keyed record is `[[key, value]]`. */
function recordsOf(result) {
  if (result === undefined || result === null) return [];
  if (Array.isArray(result)) return result;
  if (typeof result === "object" && typeof result[Symbol.iterator] === "function" && !isBytes(result)) {
    return Array.from(result);
  }
  return [result];
}

// ---------------------------------------------------------------------------------------------
// Registering functions

const REGISTERED = [];

const ROLES = {
  map: "transform",
  flat_map: "transform",
  filter: "transform",
  map_partitions: "transform",
  reduce: "reducer",
  update: "updater",
  update_with_key: "updater",
  map_with_state: "updater",
  foreach: "sink",
  foreach_batch: "sink",
};

const WIT_KINDS = {
  map: "map",
  flat_map: "flat-map",
  filter: "filter",
  map_partitions: "map-partitions",
  reduce: "reduce",
  update: "update",
  update_with_key: "update-with-key",
  map_with_state: "map-with-state",
  foreach: "foreach",
  foreach_batch: "foreach-batch",
};

function register(kind, fn, options = {}) {
  if (typeof fn !== "function") throw new TypeError(`sluice.${kind} takes a function`);
  const name = options.name || fn.name;
  if (!name) throw new TypeError(`sluice.${kind}: an anonymous function needs { name: "..." }`);
  const codec = options.in === undefined ? "text" : options.in;
  checkCodec(codec, `${kind} ${name}`);
  if (ROLES[kind] === "updater") {
    checkCodec(options.state || "json", `${kind} ${name} (state)`);
    checkCodec(options.key || "text", `${kind} ${name} (key)`);
  }
  const entry = { kind, role: ROLES[kind], name, fn, codec, options };
  if (kind === "reduce" && options.inverse !== undefined && typeof options.inverse !== "function") {
    throw new TypeError(`reduce ${name}: inverse must be a function`);
  }
  REGISTERED.push(entry);
  return entry;
}

/** One record in, one out: `map(fn, { in, name })`. */
export const map = (fn, options) => register("map", fn, options);
/** One record in, any number out (an array, an iterable, one record, or nothing). */
export const flatMap = (fn, options) => register("flat_map", fn, options);
/** Keep the records for which `fn` returns true, unchanged. */
export const filter = (fn, options) => register("filter", fn, options);
/** A whole partition (an array of records) in, any number out. */
export const mapPartitions = (fn, options) => register("map_partitions", fn, options);
/** A reducer `(a, b) => value`; `{ inverse: (a, b) => a - b }` serves sliding windows. */
export const reduce = (fn, options) => register("reduce", fn, options);
/** `update(values, state) => state | undefined` (Spark's updateStateByKey). */
export const update = (fn, options) => register("update", fn, options);
/** `updateWithKey(key, values, state) => state | undefined`. */
export const updateWithKey = (fn, options) => register("update_with_key", fn, options);
/** `mapWithState(key, values, state) => records`, `state` a `State`. */
export const mapWithState = (fn, options) => register("map_with_state", fn, options);
/** A sink called per record. */
export const foreach = (fn, options) => register("foreach", fn, options);
/** A sink called once per partition: `fn(info, records)`. */
export const foreachBatch = (fn, options) => register("foreach_batch", fn, options);

/** The state of one key during a `mapWithState` call (Spark's `State[S]`). */
export class State {
  constructor(value, timingOut, batchTime) {
    this.value = value;
    this.timingOut = timingOut;
    this.batchTime = batchTime;
  }
  get() {
    return this.value;
  }
  exists() {
    return this.value !== undefined;
  }
  update(value) {
    this.value = value;
  }
  remove() {
    this.value = undefined;
  }
  isTimingOut() {
    return this.timingOut;
  }
}

// ---------------------------------------------------------------------------------------------
// Logging and metrics

import { log as hostLog } from "sluice:udf/logging@0.2.0";
import { counterAdd, gaugeSet } from "sluice:udf/metrics@0.2.0";

/** Write one log line at `level` (`trace`, `debug`, `info`, `warn`, `error`) with fields. */
export function log(level, message, fields = {}) {
  hostLog(level, String(message), Object.entries(fields).map(([k, v]) => [String(k), String(v)]));
}
/** Add `delta` to the counter `name`. */
export function counter(name, delta = 1) {
  counterAdd(name, BigInt(delta));
}
/** Set the gauge `name` to `value`. */
export function gauge(name, value) {
  gaugeSet(name, Number(value));
}

// ---------------------------------------------------------------------------------------------
// Runners

function run(call) {
  try {
    return call();
  } catch (e) {
    if (e instanceof UdfFailure) {
      throw { message: e.message, recordIndex: e.recordIndex };
    }
    throw { message: describe(e), recordIndex: undefined };
  }
}

function perRecord(entry, records, each) {
  let i = 0;
  try {
    for (; i < records.length; i++) each(records[i], i);
  } catch (e) {
    if (e instanceof UdfFailure) throw e;
    throw new UdfFailure(`record ${i}: ${describe(e)}`, i);
  }
}

function transform(entry, batch) {
  const records = readRecords(entry.codec, batch);
  const times = batch.eventTimes;
  const f = entry.fn;
  switch (entry.kind) {
    case "map": {
      const out = new Array(records.length);
      perRecord(entry, records, (r, i) => {
        out[i] = f(r);
      });
      return batchOf(out, times);
    }
    case "flat_map": {
      const out = [];
      const outTimes = [];
      perRecord(entry, records, (r, i) => {
        for (const item of recordsOf(f(r))) {
          out.push(item);
          outTimes.push(times[i]);
        }
      });
      return batchOf(out, outTimes);
    }
    case "filter": {
      const keep = new Array(records.length);
      let all = true;
      perRecord(entry, records, (r, i) => {
        keep[i] = Boolean(f(r));
        all = all && keep[i];
      });
      if (all) return batch;
      const pick = (col) => {
        const parts = items(col, "value").filter((_, i) => keep[i]);
        return column(parts);
      };
      return {
        keys: batch.keys ? pick(batch.keys) : undefined,
        values: pick(batch.values),
        eventTimes: BigInt64Array.from(Array.from(times).filter((_, i) => keep[i])),
      };
    }
    default: {
      let latest = -(2n ** 63n);
      for (const t of times) if (t > latest) latest = t;
      let out;
      try {
        out = recordsOf(f(records));
      } catch (e) {
        throw new UdfFailure(describe(e));
      }
      return batchOf(out, out.map(() => latest));
    }
  }
}

function chosen(role, fns) {
  const list = fns.length ? fns : REGISTERED;
  if (!list.length) throw new TypeError(`a ${role} component exports at least one function`);
  for (const e of list) {
    if (!e || !e.kind) throw new TypeError(`${String(e)} is not registered: wrap it with sluice.<kind>(fn) first`);
    if (e.role !== role) {
      throw new TypeError(`${e.name} is a ${e.kind} function (${e.role} world); this component is a ${role}`);
    }
  }
  return list;
}

function numbered(list, n) {
  if (n >= 0 && n < list.length) return list[n];
  throw new UdfFailure(`this component has no function number ${n}; the host must call \`functions\` first`);
}

function world(list) {
  const infos = list.map((e) => ({
    name: e.name,
    kind: WIT_KINDS[e.kind],
    hasInverse: e.kind === "reduce" && e.options.inverse !== undefined,
  }));
  return { abiVersion: () => ABI_VERSION, functions: () => infos };
}

/** `export const { abiVersion, functions, transforms } = sluice.exportTransforms(f, g)`. */
export function exportTransforms(...fns) {
  const list = chosen("transform", fns);
  return { ...world(list), transforms: { transform: (n, batch) => run(() => transform(numbered(list, n), batch)) } };
}

/** `export const { abiVersion, functions, reducers } = sluice.exportReducers(f)`. */
export function exportReducers(...fns) {
  const list = chosen("reducer", fns);
  const reduceCall = (n, values, groupEnds) => {
    const e = numbered(list, n);
    const v = decodeColumn(e.codec, values, "", "value");
    const out = [];
    let start = 0;
    groupEnds.forEach((end, g) => {
      if (end <= start || end > v.length) {
        throw new UdfFailure(`malformed groups from the host: group ${g} spans items ${start}..${end} of ${v.length}`);
      }
      let acc = v[start];
      try {
        for (let i = start + 1; i < end; i++) acc = e.fn(acc, v[i]);
      } catch (err) {
        throw new UdfFailure(`group ${g} (values ${start}..${end}): ${describe(err)}`);
      }
      out.push(acc);
      start = end;
    });
    return column(out);
  };
  const invertCall = (n, left, right) => {
    const e = numbered(list, n);
    if (!e.options.inverse) {
      throw new UdfFailure(`reducer \`${e.name}\` has no inverse; register it with { inverse } to use it in a sliding window with an inverse`);
    }
    const l = decodeColumn(e.codec, left, "", "left item");
    const r = decodeColumn(e.codec, right, "", "right item");
    if (l.length !== r.length) throw new UdfFailure(`malformed inverse call from the host: ${l.length} left items, ${r.length} right`);
    return column(l.map((a, i) => e.options.inverse(a, r[i])));
  };
  return {
    ...world(list),
    reducers: {
      reduce: (n, values, groupEnds) => run(() => reduceCall(n, values, groupEnds)),
      invert: (n, left, right) => run(() => invertCall(n, left, right)),
    },
  };
}

/** `export const { abiVersion, functions, updaters } = sluice.exportUpdaters(f)`; `in` reads
 * the values, `state` (default `"json"`) the state, `key` (default `"text"`) the key. */
export function exportUpdaters(...fns) {
  const list = chosen("updater", fns);
  const updateCall = (n, input) => {
    const e = numbered(list, n);
    const stateCodec = e.options.state || "json";
    const keyCodec = e.options.key || "text";
    const keys = decodeColumn(keyCodec, input.keys, "key", "group");
    const values = decodeColumn(e.codec, input.values, "value", "item");
    // States decoded in bulk; a group without state has an empty placeholder, not parsed.
    const stateTexts = stateCodec === "bytes" ? items(input.states, "state") : texts(input.states, "state", "group");
    const parseState = stateCodec === "bytes" ? null : PARSERS[stateCodec];
    const news = [];
    const emitted = [];
    let start = 0;
    for (let g = 0; g < keys.length; g++) {
      const end = input.groupEnds[g];
      const group = values.slice(start, end);
      start = end;
      let old;
      if (input.hasState[g]) {
        try {
          old = parseState ? parseState(stateTexts[g]) : stateTexts[g];
        } catch (err) {
          throw new UdfFailure(`group ${g}: state expected ${stateCodec}: ${describe(err)}`);
        }
      }
      let next;
      try {
        if (e.kind === "update") next = e.fn(group, old);
        else if (e.kind === "update_with_key") next = e.fn(keys[g], group, old);
        else {
          const state = new State(old, input.timingOut[g], input.batchTime);
          for (const r of recordsOf(e.fn(keys[g], group, state))) emitted.push(r);
          next = state.value;
        }
      } catch (err) {
        throw new UdfFailure(`group ${g}: ${describe(err)}`);
      }
      news.push(input.timingOut[g] ? undefined : next);
    }
    const hasState = news.map((s) => s !== undefined && s !== null);
    return {
      states: column(news.map((s, i) => (hasState[i] ? s : EMPTY))),
      hasState,
      emitted: batchOf(emitted, emitted.map(() => input.batchTime)),
    };
  };
  return { ...world(list), updaters: { update: (n, input) => run(() => updateCall(n, input)) } };
}

/** `export const { abiVersion, functions, sinks } = sluice.exportSinks(f)`. */
export function exportSinks(...fns) {
  const list = chosen("sink", fns);
  const write = (n, batchId, batchTime, partition, input) => {
    const e = numbered(list, n);
    const records = readRecords(e.codec, input);
    if (e.kind === "foreach") {
      perRecord(e, records, (r) => e.fn(r));
    } else {
      try {
        e.fn({ batchId, batchTime, partition }, records);
      } catch (err) {
        throw new UdfFailure(describe(err));
      }
    }
  };
  return { ...world(list), sinks: { write: (...args) => run(() => write(...args)) } };
}
