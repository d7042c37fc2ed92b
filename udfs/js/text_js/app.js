// Text transforms, the JavaScript twin of udfs/text: split_words (flatMap), pair_one (map),
// uppercase, lowercase (map), non_empty (filter).
import * as sluice from "./sluice.js";

const splitWords = sluice.flatMap((line) => {
  const t = line.trim();
  return t === "" ? [] : t.split(/\s+/);
}, { name: "split_words" });

const pairOne = sluice.map((word) => [word, 1], { name: "pair_one" });
const uppercase = sluice.map((line) => line.toUpperCase(), { name: "uppercase" });
const lowercase = sluice.map((line) => line.toLowerCase(), { name: "lowercase" });
const nonEmpty = sluice.filter((line) => line.trim() !== "", { name: "non_empty" });

export const { abiVersion, functions, transforms } = sluice.exportTransforms(
  splitWords,
  pairOne,
  uppercase,
  lowercase,
  nonEmpty,
);
