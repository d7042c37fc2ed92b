// The clickstream CSV of WORKLOADS.md, the JavaScript twin of udfs/clickstream:
// is_purchase_line (filter, W1), user_amount (map to [user_id, cents] with the line's event
// time, W1 and W4), parse_event (map to [user_id, {user_id, event_type, amount_cents}]).
import * as sluice from "./sluice.js";

const TYPES = new Set(["view", "click", "purchase"]);
const INTEGER = /^[+-]?[0-9]+$/;
const AMOUNT = /^([0-9]+)(?:\.([0-9]{1,2}))?$/;

function parseFields(line) {
  const fields = line.replace(/[\r\n]+$/, "").split(",");
  if (fields.length !== 4) {
    throw new Error(
      `expected 4 comma-separated fields \`event_time_ms,user_id,event_type,amount\`, got ${JSON.stringify(line)}`,
    );
  }
  const [time, user, kind, amount] = fields;
  if (!INTEGER.test(time)) throw new Error(`event_time_ms ${JSON.stringify(time)} is not an integer`);
  const userId = /^\+?[0-9]+$/.test(user) ? Number(user) : -1;
  if (!(userId >= 0 && userId <= 4294967295)) {
    throw new Error(`user_id ${JSON.stringify(user)} is not an unsigned integer`);
  }
  if (!TYPES.has(kind)) throw new Error(`event_type ${JSON.stringify(kind)} is not view, click or purchase`);
  const m = AMOUNT.exec(amount);
  if (!m) throw new Error(`amount ${JSON.stringify(amount)} is not a decimal with at most two places`);
  const frac = m[2] === undefined ? 0 : Number(m[2]) * (m[2].length === 1 ? 10 : 1);
  return [BigInt(time), userId, kind, Number(m[1]) * 100 + frac];
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
