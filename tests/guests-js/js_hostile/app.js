// JavaScript UDFs that misbehave: `bomb` allocates until the memory cap stops it, `spin` never
// returns, `upper` behaves.
import * as sluice from "./sluice.js";

const bomb = sluice.map((line) => {
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
}, { name: "bomb" });

const spin = sluice.map((line) => {
  for (;;) {}
}, { name: "spin" });

const upper = sluice.map((line) => line.toUpperCase(), { name: "upper" });

export const { abiVersion, functions, transforms } = sluice.exportTransforms(bomb, spin, upper);
