// The demo page in a real browser: Debian's chromium, headless, driven by puppeteer-core (no browser download),
// decodes conformance streams through onnxruntime-web and compares with the Python decoder's pictures
// (python -m bench browser-refs writes them and refs.json; SDLITE_BROWSER_REFS names that file). Writes
// results.json and a screenshot of the demo page beside refs.json.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

import { serve, ROOT } from "../demo/server.js";

const REFS = process.env.SDLITE_BROWSER_REFS;
const CHROMIUM = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
const skip = !REFS ? "set SDLITE_BROWSER_REFS to the refs.json of `python -m bench browser-refs`"
  : !existsSync(REFS) ? `${REFS} does not exist`
  : !CHROMIUM ? "no chromium (apt-get install chromium, or set CHROMIUM)" : false;
const MAX_MEAN_ABS = 1.0; // the goal: within 1/255 mean absolute difference (pixels in 0..255)

let browser, page, served, refs;
const results = {};

before(async () => {
  if (skip) return;
  refs = JSON.parse(readFileSync(REFS, "utf8"));
  const { default: puppeteer } = await import("puppeteer-core");
  served = await serve({ mounts: { "/shared/": process.env.SDLITE_SHARED ?? join(ROOT, "..", "shared"), "/refs/": dirname(REFS) } });
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  page = await browser.newPage();
  page.on("pageerror", (error) => console.error("page error:", error.message));
  await page.setViewport({ width: 1700, height: 900 });
  await page.goto(`${served.url}/web/demo/index.html`);
  await page.waitForSelector("body[data-ready]", { timeout: 120_000 });
});

after(async () => {
  if (skip) return;
  if (page) {
    results.page = await page.evaluate(() => ({ providers: sdliteDemo.providers, threads: sdliteDemo.threads, crossOriginIsolated: sdliteDemo.crossOriginIsolated }));
    results.userAgent = await browser.version();
    const shown = refs.streams.find((s) => s.timed) ?? refs.streams.at(-1);
    await page.evaluate((s) => sdliteDemo.check({ ...s, repeats: 1 }), shown);
    if (shown.original) await page.evaluate((url) => sdliteDemo.showOriginal(url), shown.original);
    await page.screenshot({ path: join(dirname(REFS), "demo.png"), fullPage: true });
  }
  writeFileSync(join(dirname(REFS), "results.json"), JSON.stringify(results, null, 1));
  await browser?.close();
  served?.server.close();
});

test("the page is cross-origin isolated and runs onnxruntime-web's wasm with threads", { skip }, async () => {
  const state = await page.evaluate(() => ({ isolated: sdliteDemo.crossOriginIsolated, threads: sdliteDemo.threads }));
  assert.equal(state.isolated, true);
  assert.ok(state.threads >= 1);
});

test("conformance streams decode in the browser: latents bit-identical, pixels within 1/255 of Python's", { skip }, async () => {
  const streams = refs.streams.filter((s) => !s.timed);
  assert.ok(streams.length >= 10, `only ${streams.length} reference streams`);
  results.streams = {};
  for (const s of streams) {
    const got = await page.evaluate((s) => sdliteDemo.check(s), s);
    results.streams[s.name] = { space: s.space, ...got, python_seconds: s.python_seconds };
    assert.equal(got.error, undefined, `${s.name}: ${got.error}`);
    assert.equal(got.latentsSha256, s.latents_sha256, `${s.name}: latents differ`);
    assert.ok(got.meanAbs <= MAX_MEAN_ABS, `${s.name}: mean absolute difference ${got.meanAbs} over ${MAX_MEAN_ABS}`);
  }
});

test("768x512 streams: browser and Python decode times (the first call creates the session)", { skip }, async () => {
  results.timed = {};
  for (const s of refs.streams.filter((s) => s.timed)) {
    const got = await page.evaluate((s) => sdliteDemo.check({ ...s, repeats: 4 }), s);
    results.timed[s.name] = { ...got, python_seconds: s.python_seconds, bytes: s.bytes };
    assert.ok(got.meanAbs <= MAX_MEAN_ABS, `${s.name}: mean absolute difference ${got.meanAbs}`);
  }
});

test("errors name the problem: a truncated stream, an unknown version, a decoder of another space, a missing decoder", { skip }, async () => {
  const stream = refs.streams.find((s) => s.space === "sd1" && !s.timed);
  const truncated = await page.evaluate(async (url) => {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    return sdliteDemo.failure(Array.from(bytes.subarray(0, bytes.length - 7)));
  }, stream.stream);
  assert.equal(truncated?.name, "BitstreamError");
  const future = await page.evaluate(async (url) => {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    bytes[4] = 9;
    return sdliteDemo.failure(Array.from(bytes));
  }, stream.stream);
  assert.match(future?.message ?? "", /unsupported format version 9/);
  const other = await page.evaluate((url) => sdliteDemo.failure(url, "sd3"), stream.stream);
  assert.equal(other?.name, "ModelMismatchError");
  assert.match(other.message, /latent space sd1; this decoder reads sd3/);
  const missing = await page.evaluate((url) => sdliteDemo.failure(url, "sd1", "/refs/models/no-such/vae_decoder/model.onnx"), stream.stream);
  assert.equal(missing?.name, "BundleError");
  assert.match(missing.message, /cannot load the decoder .*no-such/);
  const status = await fetch(`${served.url}/web/%E0%A4%A`).then((r) => r.status); // a malformed escape: refused, the server stays up
  assert.equal(status, 400);
  assert.equal(await fetch(`${served.url}/web/demo/index.html`).then((r) => r.status), 200);
});
