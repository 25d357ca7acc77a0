// From a decoder's output to the picture sdlite's Python decoder gives, with the same arithmetic: tiles blended as
// sdlite/tiling.py blends them, float samples to 8-bit pixels as sdlite/images.py rounds them, and Pillow's
// Lanczos resize (fixed point, as Pillow's Resample.c computes it) for streams coded at a reduced scale.
// No dependencies; every function is pure (numbers in, typed arrays out).

export const DEFAULT_TILE = 96; // latent cells a side decoded in one call (sdlite.tiling.DEFAULT_TILE)
export const DEFAULT_OVERLAP = 16; // latent cells neighbouring tiles share (sdlite.tiling.DEFAULT_OVERLAP)

/** Python's round(): halves to even. */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** sdlite.tiling.tile_layout: [size, starts] of the fewest tiles of at most `tile` cells covering 0..length. */
export function tileLayout(length, tile, overlap, multiple = 1) {
  if (length <= tile) return [length, [0]];
  const gaps = Math.ceil((length - tile) / (tile - overlap));
  let size = Math.ceil((length + gaps * overlap) / (gaps + 1));
  size = Math.min(tile, Math.ceil(size / multiple) * multiple);
  const starts = [];
  for (let i = 0; i <= gaps; i++) starts.push(roundHalfEven((i * (length - size)) / gaps));
  return [size, starts];
}

function ramp(start, size, total, overlap) {
  const weights = new Float64Array(size).fill(1);
  for (let i = 0; i < overlap; i++) {
    const rise = (i + 0.5) / overlap;
    if (start > 0) weights[i] = Math.min(weights[i], rise);
    if (start + size < total) weights[size - overlap + i] = Math.min(weights[size - overlap + i], (overlap - 1 - i + 0.5) / overlap);
  }
  return weights;
}

/**
 * sdlite.tiling.run_tiled for a batch of one: `run(piece, [C, h, w])` maps a latent piece (Float32Array, C x h x w)
 * to a Float32Array of 3 x h*f x w*f; latents over `tile` cells a side go by overlapping tiles, blended in float64.
 * Returns a Float32Array of 3 x H x W (H = h*f, W = w*f).
 */
export async function runTiled(run, latents, [channels, h, w], factor, { tile = DEFAULT_TILE, overlap = DEFAULT_OVERLAP, onTile = null } = {}) {
  if (tile === null || (h <= tile && w <= tile)) return run(latents, [channels, h, w]);
  const [sizeH, startsY] = tileLayout(h, tile, overlap);
  const [sizeW, startsX] = tileLayout(w, tile, overlap);
  const H = h * factor, W = w * factor, pieceH = sizeH * factor, pieceW = sizeW * factor;
  const out = new Float64Array(3 * H * W), weight = new Float64Array(H * W);
  const piece = new Float32Array(channels * sizeH * sizeW);
  let done = 0;
  for (const y0 of startsY) {
    for (const x0 of startsX) {
      for (let c = 0; c < channels; c++)
        for (let y = 0; y < sizeH; y++) {
          const from = c * h * w + (y0 + y) * w + x0;
          piece.set(latents.subarray(from, from + sizeW), c * sizeH * sizeW + y * sizeW);
        }
      const sample = await run(piece, [channels, sizeH, sizeW]);
      const rows = ramp(y0 * factor, pieceH, H, overlap * factor), cols = ramp(x0 * factor, pieceW, W, overlap * factor);
      for (let y = 0; y < pieceH; y++) {
        const row = (y0 * factor + y) * W + x0 * factor;
        for (let x = 0; x < pieceW; x++) {
          const blend = rows[y] * cols[x];
          for (let c = 0; c < 3; c++) out[c * H * W + row + x] += sample[c * pieceH * pieceW + y * pieceW + x] * blend;
          weight[row + x] += blend;
        }
      }
      if (onTile) onTile(++done, startsY.length * startsX.length);
    }
  }
  const result = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) result[c * H * W + i] = out[c * H * W + i] / weight[i];
  return result;
}

/** numpy's rint: halves to even (the float32 value is exact in float64). */
function rint(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * sdlite.images.to_image: samples (3 x H x W float32, about [-1, 1]) to RGB bytes (H' x W' x 3) cropped to
 * width x height, with numpy's float32 arithmetic: clip((x + 1) * 127.5, 0, 255), then round half to even.
 */
export function toRgb(sample, H, W, width, height) {
  const rgb = new Uint8Array(width * height * 3);
  const f = Math.fround;
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const v = f(f(sample[c * H * W + y * W + x] + 1) * 127.5);
        rgb[(y * width + x) * 3 + c] = rint(Math.min(255, Math.max(0, v)));
      }
  return rgb;
}

// ---- Pillow's Lanczos resize (Resample.c: precompute_coeffs, normalize_coeffs_8bpc, the two passes) ---------------
const PRECISION_BITS = 32 - 8 - 2;
const LANCZOS_SUPPORT = 3.0;

function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

function lanczos(x) {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = LANCZOS_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Int32Array(outSize * ksize), bounds = new Int32Array(outSize * 2);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = lanczos((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, kk, bounds };
}

function clip8(value) {
  const v = Math.floor(value / (1 << PRECISION_BITS)); // an arithmetic shift: exact for the sums below 2^53
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** PIL's Image.resize((width, height), Image.LANCZOS) of an RGB image (H x W x 3 bytes). */
export function resizeLanczos(rgb, inW, inH, outW, outH) {
  const horizontal = outW !== inW, vertical = outH !== inH;
  const vert = coefficients(inH, outH);
  let source = rgb, rows = inH, first = 0;
  if (horizontal) {
    const hor = coefficients(inW, outW);
    first = vertical ? vert.bounds[0] : 0;
    const last = vertical ? vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1] : inH;
    rows = last - first;
    const temp = new Uint8Array(rows * outW * 3);
    for (let y = 0; y < rows; y++)
      for (let xx = 0; xx < outW; xx++) {
        const xmin = hor.bounds[xx * 2], xmax = hor.bounds[xx * 2 + 1], base = xx * hor.ksize;
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += rgb[((y + first) * inW + x + xmin) * 3 + c] * hor.kk[base + x];
          temp[(y * outW + xx) * 3 + c] = clip8(ss);
        }
      }
    source = temp;
  }
  if (!vertical) return source;
  const out = new Uint8Array(outH * outW * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2] - first, ymax = vert.bounds[yy * 2 + 1], base = yy * vert.ksize;
    for (let x = 0; x < outW; x++)
      for (let c = 0; c < 3; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += source[((y + ymin) * outW + x) * 3 + c] * vert.kk[base + y];
        out[(yy * outW + x) * 3 + c] = clip8(ss);
      }
  }
  return out;
}

/** RGB bytes (H x W x 3) to RGBA bytes for an ImageData. */
export function rgbToRgba(rgb, width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0, j = 0; i < width * height; i++, j += 4) {
    rgba[j] = rgb[i * 3];
    rgba[j + 1] = rgb[i * 3 + 1];
    rgba[j + 2] = rgb[i * 3 + 2];
    rgba[j + 3] = 255;
  }
  return rgba;
}
