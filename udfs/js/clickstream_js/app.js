// The clickstream CSV of WORKLOADS.md, the JavaScript twin of udfs/clickstream:
// is_purchase_line (filter, W1), user_amount (map to [user_id, cents] with the line's event
// time, W1 and W4), parse_event (map to [user_id, {user_id, event_type, amount_cents}]).
import * as sluice from "./sluice.js";

const TYPES = new Set(["view", "click", "purchase"]);

// String built-ins only: in the component, SpiderMonkey interprets (no JIT), where a regular
// expression or a loop over characters costs many times a built-in like split or Number.

/** A decimal integer written canonically (`String(n)` gives it back), or NaN. */
function integer(text) {
  const n = Number(text);
  return Number.isSafeInteger(n) && String(n) === text ? n : NaN;
}

/** `D.CC`, `D.C` or `D` as integer cents, or NaN. */
function cents(text) {
  if (text === "0") return 0;
  const dot = text.indexOf(".");
  const whole = integer(dot < 0 ? text : text.slice(0, dot));
  if (!(whole >= 0)) return NaN;
  if (dot < 0) return whole * 100;
  const frac = text.slice(dot + 1);
  const f = frac.length === 1 || frac.length === 2 ? Number(frac) : NaN;
  if (!Number.isInteger(f) || frac.trim() !== frac || frac.startsWith("+") || frac.startsWith("-")) {
    return NaN;
  }
  return whole * 100 + (frac.length === 1 ? f * 10 : f);
}

function parseFields(line) {
  let end = line.length;
  while (end > 0 && (line[end - 1] === "\n" || line[end - 1] === "\r")) end--;
  const fields = (end === line.length ? line : line.slice(0, end)).split(",");
  if (fields.length !== 4) {
    throw new Error(
      `expected 4 comma-separated fields \`event_time_ms,user_id,event_type,amount\`, got ${JSON.stringify(line)}`,
    );
  }
  const [time, user, kind, amount] = fields;
  const eventTime = integer(time);
  if (Number.isNaN(eventTime)) throw new Error(`event_time_ms ${JSON.stringify(time)} is not an integer`);
  const userId = integer(user);
  if (!(userId >= 0 && userId <= 4294967295)) {
    throw new Error(`user_id ${JSON.stringify(user)} is not an unsigned integer`);
  }
  if (!TYPES.has(kind)) throw new Error(`event_type ${JSON.stringify(kind)} is not view, click or purchase`);
  const amountCents = cents(amount);
  if (Number.isNaN(amountCents)) {
    throw new Error(`amount ${JSON.stringify(amount)} is not a decimal with at most two places`);
  }
  return [eventTime, userId, kind, amountCents];
}

const isPurchaseLine = sluice.filter((line) => line.split(",")[2] === "purchase", {
  name: "is_purchase_line",
});

const userAmount = sluice.map((line) => {
  const [time, user, , cents] = parseFields(line);
  return sluice.timed(time, [user, cents]);
}, { name: "user_amount" });

const parseEvent = sluice.map((line) => {
  const [time, user, kind, cents] = parseFields(line);
  return sluice.timed(time, [user, { user_id: user, event_type: kind, amount_cents: cents }]);
}, { name: "parse_event" });

export const { abiVersion, functions, transforms } = sluice.exportTransforms(
  isPurchaseLine,
  userAmount,
  parseEvent,
);
