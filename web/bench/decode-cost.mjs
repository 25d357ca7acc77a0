// The costliest streams sdlite knows (python -m bench decode-cost --out DIR writes them to DIR/streams), decoded
// by the JavaScript decoder in this process: seconds and outcome per stream, as a Markdown table.
// node bench/decode-cost.mjs ../bench-out/decode-cost/streams
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeLatents } from "../src/sdz.js";
import { BASES, WEIGHTS } from "../src/bases.js";

const folder = process.argv[2] ?? "../bench-out/decode-cost/streams";
console.log("| case | bytes | seconds (JavaScript) | outcome |\n|---|---|---|---|");
for (const file of readdirSync(folder).filter((f) => f.endsWith(".sdz")).sort()) {
  const { kind, title } = JSON.parse(readFileSync(join(folder, file.replace(/\.sdz$/, ".json")), "utf8"));
  const data = readFileSync(join(folder, file));
  const start = performance.now();
  let outcome = "decoded";
  try {
    await decodeLatents(data, { bases: BASES, weights: WEIGHTS, maxPixels: kind === "latents-large" ? null : 2048 * 2048 });
  } catch (error) {
    outcome = `${error.name}: ${error.message}`.slice(0, 120);
  }
  console.log(`| ${title} | ${data.length} | ${((performance.now() - start) / 1000).toFixed(2)} | ${outcome} |`);
}
