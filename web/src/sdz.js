// .sdz streams to raw latents in JavaScript, written from docs/format.md (the pure parts of the browser
// decoder: container, palette and entropy methods, the range coder). No dependencies: inflate is the
// platform's DecompressionStream (browsers, Node 18+). Latents come back as a Float32Array (C, h, w),
// bit-identical to sdlite's Python decoder (tests: web/test/conformance.test.js against tests/conformance).

/** A stream that cannot be decoded: truncated, corrupt, of an unknown version or method (sdlite.BitstreamError). */
export class BitstreamError extends Error {
  constructor(message) {
    super(message);
    this.name = "BitstreamError";
  }
}

const MASK64 = (1n << 64n) - 1n;
const MIN_PROBABILITY = 2 ** -24; // the coder never gives a symbol less
const SLACK_BITS = 64; // the range coder's own overhead, in the payload-length check
const LEGACY_FREE_CALLS = 12_500; // format versions 2 and 3: coder calls any stream may need ...
const LEGACY_CALLS_PER_BYTE = 4; // ... and those each payload byte justifies (docs/format.md, sdlite's coder.py)
const THRESHOLDS = [1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40];
const SD1 = 0.18215;
const TRANSFORM_UNITS = { 0: 1.0, 1: 0.13025 / SD1, 2: 1.5305 / SD1, 3: 0.3611 / SD1, 4: 4.4, 5: 4.4 };
const TRANSFORM_SINCE = { 5: 5 }; // transforms later format versions added: the first version that may name them
export const SPACES = { 0: "unknown", 1: "sd1", 2: "sdxl", 3: "sd3", 4: "flux", 5: "flux2" };
export const DEFAULT_MAX_PIXELS = 2048 * 2048;

// ---- bytes ------------------------------------------------------------------------------------------------------
class Reader {
  constructor(bytes, where = "the stream") {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
    this.where = where;
  }
  need(n) {
    if (this.at + n > this.bytes.length) throw new BitstreamError(`truncated ${this.where}`);
  }
  u8() { this.need(1); return this.bytes[this.at++]; }
  i8() { this.need(1); return this.view.getInt8(this.at++); }
  u16() { this.need(2); const v = this.view.getUint16(this.at); this.at += 2; return v; }
  i16() { this.need(2); const v = this.view.getInt16(this.at); this.at += 2; return v; }
  u32() { this.need(4); const v = this.view.getUint32(this.at); this.at += 4; return v; }
  take(n) { this.need(n); const v = this.bytes.subarray(this.at, this.at + n); this.at += n; return v; }
}

let CRC_TABLE = null;
function crc32(bytes) {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

async function inflate(bytes, limit, what) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  const parts = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) throw new BitstreamError(`corrupt ${what}: more than ${limit} bytes`);
      parts.push(value);
    }
  } catch (error) {
    if (error instanceof BitstreamError) throw error;
    throw new BitstreamError(`corrupt ${what}: ${error.message}`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

// ---- section 1: the container --------------------------------------------------------------------------------------
/** Parse and check a stream's container; returns its header fields, params and payload. */
export function readContainer(bytes, { maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const r = new Reader(bytes);
  const magic = String.fromCharCode(...r.take(4));
  if (magic !== "SDLZ") throw new BitstreamError("not an sdlite stream (bad magic); expected data starting with SDLZ");
  const version = r.u8();
  if (version < 1 || version > 5) throw new BitstreamError(`unsupported format version ${version}; this decoder reads versions 1-5`);
  const method = r.u8();
  let space = 0, factor, scale = 8;
  if (version >= 3) {
    space = r.u8(); factor = r.u8(); scale = r.u8();
  } else {
    factor = r.u8();
  }
  const modelId = Array.from(r.take(8), (b) => b.toString(16).padStart(2, "0")).join("");
  const width = r.u32(), height = r.u32(), channels = r.u8(), latentH = r.u16(), latentW = r.u16();
  if (width < 1 || height < 1 || factor < 1 || factor > 64 || scale < 8 || scale > 32 || channels < 1 || channels > 64)
    throw new BitstreamError("invalid header fields");
  if (maxPixels !== null && width * height > maxPixels) throw new BitstreamError(`image of ${width}x${height} exceeds max_pixels ${maxPixels}`);
  const side = (n) => Math.max(1, Math.floor((2 * n * 8 + scale) / (2 * scale)));
  const codedW = side(width), codedH = side(height);
  if (latentH !== Math.ceil(codedH / factor) || latentW !== Math.ceil(codedW / factor))
    throw new BitstreamError("latent shape does not fit the image size, scale and factor");
  if (maxPixels !== null && channels * latentH * latentW > 0.25 * maxPixels) throw new BitstreamError("latent too large for max_pixels");
  const paramsLen = r.u16();
  const params = r.take(paramsLen);
  const payloadLen = r.u32();
  const payload = r.take(payloadLen);
  const body = bytes.subarray(0, r.at);
  const crc = r.u32();
  if (crc32(body) !== crc) throw new BitstreamError("integrity check failed (CRC-32 mismatch): the stream is corrupt or truncated");
  if (r.at !== bytes.length) throw new BitstreamError("bytes follow the stream's CRC-32");
  return { version, method, latentSpace: SPACES[space] ?? "unknown", latentSpaceId: space, factor, scale, modelId, width, height,
           codedWidth: codedW, codedHeight: codedH, shape: [channels, latentH, latentW], params, payload };
}

// ---- section 4: palette ----------------------------------------------------------------------------------------------
async function decodePalette(params, payload, [channels, h, w]) {
  if (params.length !== 7) throw new BitstreamError("palette method parameters have the wrong length");
  const r = new Reader(params, "palette parameters");
  const stepMicro = r.u32(), offset2 = r.u16();
  if (stepMicro === 0) throw new BitstreamError("palette quantization step is zero");
  const raw = await inflate(payload, 1 + 256 * channels + h * w, "payload");
  const entries = raw[0] + 1;
  if (raw.length !== 1 + entries * channels + h * w) throw new BitstreamError("corrupt payload: palette data does not fit the latent");
  const offset = Math.fround(offset2 / 2), step = Math.fround(stepMicro / 1e6);
  const out = new Float32Array(channels * h * w);
  for (let i = 0; i < h * w; i++) {
    const index = raw[1 + entries * channels + i];
    if (index >= entries) throw new BitstreamError("corrupt payload: palette index out of range");
    for (let c = 0; c < channels; c++) out[c * h * w + i] = Math.fround(Math.fround(raw[1 + index * channels + c] - offset) * step);
  }
  return out;
}

// ---- section 5.6: the range coder -------------------------------------------------------------------------------------
class RangeDecoder {
  constructor(payload) {
    if (payload.length % 4) throw new BitstreamError("entropy payload length is not a multiple of 4");
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    this.words = [];
    for (let i = 0; i < payload.length; i += 4) this.words.push(BigInt(view.getUint32(i, true)));
    this.lower = 0n;
    this.range = MASK64;
    this.next = Math.min(2, this.words.length);
    this.bits = 0; // information of the symbols decoded so far: a payload must hold it (sdlite's _Reader)
    this.point = this.words.length >= 2 ? (this.words[0] << 32n) | this.words[1] : this.words.length === 1 ? this.words[0] << 32n : 0n;
  }
  decode(probabilities) {
    const n = probabilities.length;
    let total = 0;
    for (const p of probabilities) total += p;
    const scale = ((1 << 24) - n) / total;
    const s = this.range >> 24n;
    const quantile = Number(((this.point - this.lower) & MASK64) / s);
    if (quantile >= 1 << 24) throw new BitstreamError("corrupt entropy payload: invalid data");
    let prefix = 0, left = 0, right = 0, i = 0;
    for (; i < n; i++) {
      prefix += probabilities[i];
      right = i === n - 1 ? 1 << 24 : Math.trunc(prefix * scale) + i + 1;
      if (quantile < right) break;
      left = right;
    }
    this.bits -= Math.log2(Math.max(probabilities[i], MIN_PROBABILITY));
    if (this.bits > 32 * this.words.length + SLACK_BITS + 1e-3 * this.bits)
      throw new BitstreamError(`corrupt entropy payload: its symbols need over ${Math.round(this.bits)} bits, the payload holds ${32 * this.words.length}`);
    this.lower = (this.lower + s * BigInt(left)) & MASK64;
    this.range = s * BigInt(right - left);
    if (this.range < 1n << 32n) {
      this.lower = (this.lower << 32n) & MASK64;
      this.range = (this.range << 32n) & MASK64;
      const word = this.next < this.words.length ? this.words[this.next] : 0n;
      this.next += 1;
      this.point = ((this.point << 32n) & MASK64) | word;
    }
    return i;
  }
  exhausted() {
    return this.next >= this.words.length && (this.range === MASK64 || ((this.point - this.lower) & MASK64) < (1n << 33n) - 1n);
  }
}

function probabilities(q, rmin, rmax, fraction) {
  const num = BigInt((1 << 24) - (256 - q) ** 3);
  const largest = Math.max(Math.abs(8 * rmin - fraction), Math.abs(8 * rmax - fraction));
  const magnitudes = [1n << 20n];
  for (let k = 0; k < largest; k++) magnitudes.push((magnitudes[k] * num) >> 24n);
  const freqs = [];
  let total = 0;
  for (let r = rmin; r <= rmax; r++) {
    const m = magnitudes[Math.abs(8 * r - fraction)];
    const f = m > 1n ? Number(m) : 1;
    freqs.push(f);
    total += f;
  }
  return freqs.map((f) => f / total);
}

// ---- section 5.2: parameters -----------------------------------------------------------------------------------------
function groupShapes([c, h, w], levels) {
  if (levels === 0) return [[c, h, w]];
  const half = [c, Math.floor((h + 1) / 2), Math.floor((w + 1) / 2)];
  if (levels === 1) return [[4 * c, half[1], half[2]]];
  return [...groupShapes(half, levels - 1), [3 * c, half[1], half[2]]];
}

async function parseParams(packed, shape, version) {
  const raw = await inflate(packed, 1 << 22, "entropy method parameters");
  const r = new Reader(raw, "entropy method parameters");
  const p = {};
  let sizes, count;
  if (version >= 4) {
    p.levels = r.u8(); p.fine = r.u8(); p.coarse = r.u8(); p.stepQ = r.u16(); p.flags = r.u8(); p.transform = r.u8();
    if (![0, 1, 2].includes(p.levels)) throw new BitstreamError("entropy method parameters are invalid");
    sizes = groupShapes(shape, p.levels).map((g) => g[0]);
    count = sizes.reduce((a, b) => a + b, 0);
    const bitmap = r.take(Math.ceil(count / 8));
    p.empty = Array.from({ length: count }, (_, i) => Boolean(bitmap[i >> 3] & (0x80 >> (i % 8))));
    const ranges = sizes.map(() => [r.i16(), r.i16()]);
    p.means = Array.from({ length: count }, () => r.i16());
    p.ranges = sizes.flatMap((size, g) => Array(size).fill(ranges[g]));
    p.decays = p.empty.map((empty) => (empty ? null : [r.u8(), r.u8()]));
  } else {
    p.levels = r.u8(); p.fine = r.u8(); p.coarse = r.u8(); p.stepQ = r.u16(); p.flags = version >= 3 ? r.u8() : 0; p.transform = 0;
    if (![0, 1, 2].includes(p.levels)) throw new BitstreamError("entropy method parameters are invalid");
    sizes = groupShapes(shape, p.levels).map((g) => g[0]);
    count = sizes.reduce((a, b) => a + b, 0);
    p.empty = Array(count).fill(false);
    p.means = []; p.ranges = []; p.decays = [];
    for (let i = 0; i < count; i++) {
      p.means.push(r.i16()); p.ranges.push([r.i16(), r.i16()]); p.decays.push([r.u8(), r.u8()]);
    }
  }
  if (p.fine === 0 || p.coarse === 0 || p.stepQ === 0 || p.flags & ~1) throw new BitstreamError("entropy method parameters are invalid");
  if (!(p.transform in TRANSFORM_UNITS)) throw new BitstreamError(`unknown channel transform ${p.transform}`);
  if (p.transform in TRANSFORM_SINCE && version < TRANSFORM_SINCE[p.transform]) throw new BitstreamError(`channel transform ${p.transform} needs format version ${TRANSFORM_SINCE[p.transform]} or later; the stream says version ${version}`);
  p.weights = [];
  for (const size of sizes) {
    for (let plane = 0; plane < size; plane++) {
      if (p.empty[p.weights.length]) { p.weights.push(null); continue; }
      p.weights.push(Array.from({ length: 6 + Math.min(plane, 3) }, () => r.i8()));
    }
  }
  p.gains = Array(count).fill(128);
  if (p.flags & 1) for (let i = 0; i < count; i++) if (!p.empty[i]) p.gains[i] = r.u8();
  if (r.at !== raw.length) throw new BitstreamError("entropy method parameters have the wrong length");
  for (const [rmin, rmax] of p.ranges) if (rmin >= rmax || rmax - rmin + 1 > 4096) throw new BitstreamError("invalid residual range");
  p.sizes = sizes;
  return p;
}

// ---- sections 5.4 and 5.5: coding order and context model --------------------------------------------------------------
function blockOffsets(n, block) {
  const parts = block === null ? 1 : Math.max(1, Math.ceil(n / block));
  const base = Math.floor(n / parts), extra = n % parts;
  const out = [];
  for (let b = 0; b < parts; b++) {
    const size = base + (b < extra ? 1 : 0);
    for (let i = 0; i < size; i++) out.push([i, size]);
  }
  return out;
}

function decodeGroup(reader, p, first, [size, gh, gw], version) {
  const block = version >= 4 ? 64 : null;
  const rows = blockOffsets(gh, block), cols = blockOffsets(gw, block);
  const cells = gh * gw;
  const S = Array.from({ length: size }, () => new Int32Array(cells));
  const R = Array.from({ length: size }, () => new Int32Array(cells));
  const front = new Int32Array(cells);
  for (let pos = 0; pos < cells; pos++) front[pos] = cols[pos % gw][0] + 2 * rows[Math.floor(pos / gw)][0];
  const coded = [];
  for (let plane = 0; plane < size; plane++) if (!p.empty[first + plane]) coded.push(plane);
  let order = [];
  if (version >= 4) {
    for (const plane of coded) for (let pos = 0; pos < cells; pos++) order.push([front[pos] + plane, plane, pos]);
    order.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  } else {
    const fronts = [...new Set(front)].sort((a, b) => a - b);
    const byFront = new Map(fronts.map((f) => [f, []]));
    for (let pos = 0; pos < cells; pos++) byFront.get(front[pos]).push(pos);
    for (const f of fronts) for (let plane = 0; plane < size; plane++) for (const pos of byFront.get(f)) order.push([0, plane, pos]);
  }
  const tables = new Map();
  for (const [, plane, pos] of order) {
    const y = Math.floor(pos / gw), x = pos % gw;
    const [ly] = rows[y], [lx, bw] = cols[x];
    const own = S[plane];
    const north = ly >= 1 ? own[pos - gw] : 0;
    const nw = ly >= 1 && lx >= 1 ? own[pos - gw - 1] : north;
    const ne = ly >= 1 && lx + 1 < bw ? own[pos - gw + 1] : north;
    const nn = ly >= 2 ? own[pos - 2 * gw] : north;
    const west = lx >= 1 ? own[pos - 1] : north;
    const ww = lx >= 2 ? own[pos - 2] : west;
    const feats = [north, nw, ne, nn, west, ww];
    for (let k = Math.min(plane, 3); k >= 1; k--) feats.push(S[plane - k][pos]);
    const weights = p.weights[first + plane];
    let acc = 0;
    for (let i = 0; i < feats.length; i++) acc += weights[i] * feats[i];
    const centre = Math.min(Math.max(Math.floor((acc * 8 + 16) / 32), -32767 * 8), 32767 * 8);
    const below = Math.floor(centre / 8), fraction = centre - 8 * below;
    const rn = ly >= 1 ? R[plane][pos - gw] : 0, rw = lx >= 1 ? R[plane][pos - 1] : 0;
    let act = Math.abs(north - nw) + Math.abs(ne - north) + Math.abs(north - nn) + Math.abs(west - nw) + 2 * (Math.abs(rn) + Math.abs(rw));
    if (plane >= 1) act += 2 * Math.abs(R[plane - 1][pos]);
    let bin = 0;
    for (const t of THRESHOLDS) if (t <= act) bin++;
    const [base, slope] = p.decays[first + plane];
    const q = Math.min(Math.max(base + slope * bin, 0), 255);
    const [rmin, rmax] = p.ranges[first + plane];
    const key = `${q},${fraction},${rmin},${rmax}`;
    let table = tables.get(key);
    if (!table) { table = probabilities(q, rmin, rmax, fraction); tables.set(key, table); }
    const residual = reader.decode(table) + rmin;
    S[plane][pos] = Math.min(Math.max(below + residual, -32767), 32767);
    R[plane][pos] = residual;
  }
  return S;
}

// ---- sections 5.3, 5.7 and 5.1: reconstruction ------------------------------------------------------------------------------
function haarInverse(planes, [c, h, w], [h2, w2]) {
  // planes: 4c arrays of h2*w2 (float64); out: c arrays of h*w
  const out = [];
  for (let ch = 0; ch < c; ch++) {
    const ll = planes[ch], lh = planes[c + ch], hl = planes[2 * c + ch], hh = planes[3 * c + ch];
    const full = new Float64Array(h * w);
    for (let y = 0; y < h2; y++) {
      for (let x = 0; x < w2; x++) {
        const i = y * w2 + x;
        const a = ll[i], b = lh[i], d = hl[i], e = hh[i];
        const put = (yy, xx, v) => { if (yy < h && xx < w) full[yy * w + xx] = v; };
        put(2 * y, 2 * x, (a + b + d + e) / 2);
        put(2 * y, 2 * x + 1, (a - b + d - e) / 2);
        put(2 * y + 1, 2 * x, (a + b - d - e) / 2);
        put(2 * y + 1, 2 * x + 1, (a - b - d + e) / 2);
      }
    }
    out.push(full);
  }
  return out;
}

function recompose(groups, shape, levels, groupShapesList) {
  if (levels === 0) return groups[0];
  const [c, h, w] = shape;
  const half = [Math.floor((h + 1) / 2), Math.floor((w + 1) / 2)];
  if (levels === 1) return haarInverse(groups[0], shape, half);
  const approximation = recompose(groups.slice(0, -1), [c, half[0], half[1]], levels - 1, groupShapesList);
  return haarInverse([...approximation, ...groups[groups.length - 1]], shape, half);
}

function planeSteps(p, channels) {
  const step = p.stepQ / 1024, fine = p.fine / 16, coarse = p.coarse / 16;
  if (p.levels === 0) return [Array(channels).fill(step)];
  if (p.levels === 1) return [[...Array(channels).fill(step), ...Array(3 * channels).fill(step * fine)]];
  return [[...Array(channels).fill(step), ...Array(3 * channels).fill(step * coarse)], Array(3 * channels).fill(step * fine)];
}

async function decodeEntropy(params, payload, shape, version, bases, weights) {
  if (version < 2) throw new BitstreamError("format version 1 entropy streams used a retired context model");
  const p = await parseParams(params, shape, version);
  const shapes = groupShapes(shape, p.levels);
  if (version < 4) {
    // one sequential coder call per plane and front: refused when the payload cannot justify them
    const calls = shapes.reduce((sum, [size, gh, gw]) => sum + size * (gw + 2 * (gh - 1)), 0);
    const allowed = LEGACY_FREE_CALLS + LEGACY_CALLS_PER_BYTE * payload.length;
    if (calls > allowed)
      throw new BitstreamError(`this format version ${version} stream of latent shape (${shape.join(", ")}) needs ${calls} sequential coder calls, over the ${allowed} its ${payload.length} payload bytes justify`);
  }
  const reader = new RangeDecoder(payload);
  const steps = planeSteps(p, shape[0]);
  const groups = [];
  let first = 0;
  shapes.forEach((gshape, g) => {
    const S = decodeGroup(reader, p, first, gshape, version);
    const [size, gh, gw] = gshape;
    const planes = [];
    for (let plane = 0; plane < size; plane++) {
      const scaledStep = steps[g][plane] * (p.gains[first + plane] / 128);
      const mean = p.means[first + plane] / 64;
      const values = new Float64Array(gh * gw);
      for (let i = 0; i < gh * gw; i++) values[i] = mean + S[plane][i] * scaledStep;
      planes.push(values);
    }
    groups.push(planes);
    first += size;
  });
  if (!reader.exhausted()) throw new BitstreamError("corrupt entropy payload: its length does not match the symbols it codes");
  let coded = recompose(groups, shape, p.levels, shapes);
  const unit = TRANSFORM_UNITS[p.transform];
  if (p.transform === 5) { // component weights first: coded / (weight / 4096), correctly rounded like sdlite's
    const w = weights?.[5];
    if (!w || w.length !== coded.length) throw new BitstreamError("channel transform 5 needs its component weights");
    coded = coded.map((values, k) => { const g = w[k] / 4096; return values.map((v) => v / g); });
  }
  if (p.transform >= 2 && p.transform <= 5) {
    const basis = bases?.[p.transform];
    if (!basis) throw new BitstreamError(`channel transform ${p.transform} needs its basis`);
    const N = basis.length;
    if (shape[0] !== N) throw new BitstreamError(`channel transform ${p.transform} needs ${N} latent channels`);
    const n = coded[0].length;
    const out = Array.from({ length: N }, () => new Float64Array(n));
    for (let k = 0; k < N; k++) {
      for (let c = 0; c < N; c++) {
        const weight = basis[k][c] / 16384;
        const from = coded[k], to = out[c];
        for (let i = 0; i < n; i++) to[i] = to[i] + weight * from[i];
      }
    }
    coded = out;
  }
  const [channels, h, w] = shape;
  const latents = new Float32Array(channels * h * w);
  for (let c = 0; c < channels; c++) for (let i = 0; i < h * w; i++) latents[c * h * w + i] = coded[c][i] / unit;
  return latents;
}

/**
 * Raw latents of a stream: { header, latents } with latents a Float32Array in (C, h, w) order.
 * bases: { 2: SD3 basis, 3: FLUX basis, 4 and 5: FLUX.2 basis } (integer rows, sdlite/latent_space.py), needed for
 * those spaces; weights: { 5: FLUX.2's component weights } for transform 5 (bases.js has both).
 */
export async function decodeLatents(bytes, { bases = null, weights = null, maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  const header = readContainer(bytes, { maxPixels });
  let latents;
  if (header.method === 1) latents = await decodePalette(header.params, header.payload, header.shape);
  else if (header.method === 2) latents = await decodeEntropy(header.params, header.payload, header.shape, header.version, bases, weights);
  else throw new BitstreamError(`unknown method id ${header.method}; this decoder knows 1 (palette) and 2 (entropy)`);
  return { header, latents };
}
