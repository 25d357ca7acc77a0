// Every stream of tests/conformance decodes to the raw latents sdlite recorded (sha256 of float32 little-endian).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { execFileSync } from "node:child_process";

import { decodeLatents, readContainer, BitstreamError } from "../src/sdz.js";
import { BASES, WEIGHTS } from "../src/bases.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const corpus = join(root, "tests", "conformance");
const manifest = JSON.parse(readFileSync(join(corpus, "manifest.json"), "utf8")).streams;

function sha256(latents) {
  const bytes = new Uint8Array(latents.buffer, latents.byteOffset, latents.byteLength); // little-endian on every platform Node runs on
  return createHash("sha256").update(bytes).digest("hex");
}

test("the corpus has at least 40 streams", () => {
  assert.ok(Object.keys(manifest).length >= 40);
});

for (const [name, entry] of Object.entries(manifest)) {
  test(`${name} decodes to its recorded latents`, async () => {
    const data = readFileSync(join(corpus, entry.file));
    const { header, latents } = await decodeLatents(data, { bases: BASES, weights: WEIGHTS, maxPixels: null });
    const expected = entry.header;
    assert.equal(header.version, expected.format_version);
    assert.equal(header.latentSpace, expected.latent_space);
    assert.equal(header.modelId, expected.model_id);
    assert.deepEqual([header.width, header.height, header.codedWidth, header.codedHeight], [expected.width, expected.height, expected.coded_width, expected.coded_height]);
    assert.deepEqual(header.shape, expected.latent_shape);
    assert.equal(sha256(latents), entry.latents_sha256);
  });
}

test("a flipped byte is a BitstreamError naming the CRC", () => {
  const data = new Uint8Array(readFileSync(join(corpus, manifest["v4-entropy-sd1-q50"].file)));
  data[Math.floor(data.length / 2)] ^= 0x10;
  assert.throws(() => readContainer(data), (e) => e instanceof BitstreamError && /CRC/.test(e.message));
});

test("an unknown format version and a truncated stream are BitstreamErrors", () => {
  const data = new Uint8Array(readFileSync(join(corpus, manifest["v4-entropy-sd1-q50"].file)));
  const future = data.slice(); future[4] = 9;
  assert.throws(() => readContainer(future), (e) => e instanceof BitstreamError && /unsupported format version 9/.test(e.message));
  assert.throws(() => readContainer(data.subarray(0, 30)), BitstreamError);
});

test("the bases are sdlite's", { skip: !process.env.SDLITE_PYTHON && "set SDLITE_PYTHON to compare with sdlite/latent_space.py" }, () => {
  const out = execFileSync(process.env.SDLITE_PYTHON, ["-c", "import json; from sdlite import latent_space as s; print(json.dumps({2: s._SD3_BASIS, 3: s._FLUX_BASIS, 4: s._FLUX2_BASIS, 'weights': s._FLUX2_WEIGHTS}))"], { cwd: root });
  const python = JSON.parse(out.toString());
  assert.deepEqual(BASES[2], python["2"]);
  assert.deepEqual(BASES[3], python["3"]);
  assert.deepEqual(BASES[4], python["4"]);
  assert.deepEqual(BASES[5], python["4"]);
  assert.deepEqual(WEIGHTS[5], python.weights);
});

test("crafted streams cost no more than sdlite lets them: the same two refusals as the Python decoder",
  { skip: !process.env.SDLITE_PYTHON && "set SDLITE_PYTHON to build the streams with bench/decode_cost.py" }, async () => {
  const script = "import sys; from bench.decode_cost import _stream; sys.stdout.buffer.write(_stream(sys.argv[1])[0])";
  const build = (name) => new Uint8Array(execFileSync(process.env.SDLITE_PYTHON, ["-c", script, name], { cwd: root }));
  await assert.rejects(decodeLatents(build("empty_payload"), { bases: BASES }), (e) => e instanceof BitstreamError && /symbols need over \d+ bits, the payload holds 0/.test(e.message));
  await assert.rejects(decodeLatents(build("legacy_thin"), { bases: BASES, maxPixels: null }), (e) => e instanceof BitstreamError && /524288 sequential coder calls/.test(e.message));
  const { latents } = await decodeLatents(build("legacy_calls"), { bases: BASES }); // the most calls a tiny payload may ask for: decoded
  assert.equal(latents.length, 16 * 128 * 128);
});

test("transform 5 belongs to format version 5: a version 4 stream naming it is refused, as by sdlite",
  { skip: !process.env.SDLITE_PYTHON && "set SDLITE_PYTHON to re-seal the stream's CRC" }, async () => {
  const file = join(corpus, manifest["v5-entropy-flux2-q50"].file);
  const script = "import sys, zlib, struct; d = bytearray(open(sys.argv[1], 'rb').read()[:-4]); d[4] = 4; "
    + "sys.stdout.write((bytes(d) + struct.pack('>I', zlib.crc32(bytes(d)))).hex())";
  const older = Uint8Array.from(Buffer.from(execFileSync(process.env.SDLITE_PYTHON, ["-c", script, file]).toString(), "hex"));
  await assert.rejects(decodeLatents(older, { bases: BASES, weights: WEIGHTS }),
    (e) => e instanceof BitstreamError && /channel transform 5 needs format version 5/.test(e.message));
  const data = new Uint8Array(readFileSync(file));
  await assert.rejects(decodeLatents(data, { bases: BASES }), (e) => e instanceof BitstreamError && /needs its component weights/.test(e.message));
});
