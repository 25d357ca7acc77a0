// A .sdz stream to a picture: the latents (sdz.js), the stream's TAE decoder run with onnxruntime-web (wasm, or
// WebGPU when asked and present), and the same tiling, rounding and resize as sdlite's Python decoder (pixels.js).
// onnxruntime-web is passed in (`ort`), so a page loads it the way it likes (module, bundle, CDN) and this module
// stays importable in Node for its pure parts.

import { decodeLatents, BitstreamError } from "./sdz.js";
import { BASES, WEIGHTS } from "./bases.js";
import { runTiled, toRgb, resizeLanczos, DEFAULT_TILE } from "./pixels.js";

/** A decoder that cannot read this stream (another latent space, channel count or factor): sdlite.ModelMismatchError. */
export class ModelMismatchError extends Error {
  constructor(message) {
    super(message);
    this.name = "ModelMismatchError";
  }
}

/** A decoder model that cannot be loaded or run (bad URL, not an sdlite decoder): sdlite.BundleError. */
export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = "BundleError";
  }
}

export { BitstreamError };

// Latent channels of each space (sdlite/latent_space.py); a decoder for a space must take this many.
const SPACE_CHANNELS = { sd1: 4, sdxl: 4, sd3: 16, flux: 16, flux2: 32 };
// Decoders whose layers normalise over the whole feature map (TAEF2's GroupNorm): tiles would change what they compute,
// so they run on the whole latent here (sdlite splits them instead: sdlite/split.py; the pixels differ by about 62 dB).
const WHOLE_MAP_NORMS = new Set(["flux2"]);

/**
 * One decoder model (a bundle's vae_decoder/model.onnx) by URL, for one latent space, with its session created
 * on first use and kept. `space`: the latent space it decodes (sd1, sdxl, sd3, flux); `factor`: pixels per latent
 * cell (8 for every TAE); `modelId`: its bundle's model id (manifest.json), which streams of an unknown space need.
 */
export class Decoder {
  constructor(ort, url, { space, factor = 8, modelId = null, executionProviders = ["wasm"], sessionOptions = {} } = {}) {
    if (!(space in SPACE_CHANNELS)) throw new BundleError(`unknown latent space ${space}; choose one of: ${Object.keys(SPACE_CHANNELS).join(", ")}`);
    Object.assign(this, { ort, url, space, factor, modelId, executionProviders, sessionOptions });
    this._session = null;
  }

  async session() {
    if (!this._session) {
      try {
        this._session = await this.ort.InferenceSession.create(this.url, { executionProviders: this.executionProviders, ...this.sessionOptions });
      } catch (error) {
        throw new BundleError(`cannot load the decoder ${this.url}: ${error.message ?? error}`);
      }
      const [input] = this._session.inputNames;
      if (input !== "latent_sample") throw new BundleError(`${this.url} takes ${input}, not latent_sample: not an sdlite decoder (vae_decoder/model.onnx)`);
    }
    return this._session;
  }

  /** One call of the network: a Float32Array (C x h x w) to a Float32Array (3 x h*f x w*f). */
  async run(latents, [c, h, w]) {
    const session = await this.session();
    const feeds = { latent_sample: new this.ort.Tensor("float32", latents, [1, c, h, w]) };
    const results = await session.run(feeds);
    const sample = results[session.outputNames[0]];
    const want = [1, 3, h * this.factor, w * this.factor];
    if (sample.dims.join() !== want.join()) throw new BundleError(`${this.url} gave shape [${sample.dims}] for [1,${c},${h},${w}], not [${want}]`);
    return sample.data; // outputs stay on the CPU (no preferredOutputLocation is asked for)
  }
}

/**
 * Decode a stream to pixels.
 *   bytes: the .sdz file (Uint8Array or ArrayBuffer)
 *   decoders: { sd1: Decoder, sd3: Decoder, ... } (the page chooses which it loads) or a function header -> Decoder
 *   tile: latent cells a side decoded in one call (sdlite's default, 96); null: never tile
 * Returns { header, latents, rgb (Uint8Array, height x width x 3), width, height, seconds: { latents, network, pixels } }.
 * Errors: BitstreamError (the stream), ModelMismatchError (no decoder for its space), BundleError (the model).
 */
export async function decodeImage(bytes, decoders, { tile = DEFAULT_TILE, maxPixels, onTile = null } = {}) {
  const now = () => (globalThis.performance ?? Date).now();
  let start = now();
  const { header, latents } = await decodeLatents(bytes, { bases: BASES, weights: WEIGHTS, ...(maxPixels !== undefined ? { maxPixels } : {}) });
  const seconds = { latents: (now() - start) / 1000 };
  const decoder = typeof decoders === "function" ? decoders(header) : decoders?.[header.latentSpace];
  if (!decoder) {
    const known = typeof decoders === "function" ? "" : `; this page loads decoders for: ${Object.keys(decoders ?? {}).join(", ") || "none"}`;
    throw new ModelMismatchError(`no decoder for latent space ${header.latentSpace} (the stream's model is ${header.modelId})${known}`);
  }
  const [channels, h, w] = header.shape;
  if (header.latentSpace === "unknown" && decoder.modelId !== header.modelId)
    throw new ModelMismatchError(`the stream's latent space is unknown, so only its own model ${header.modelId} reads it; this decoder is ${decoder.modelId ?? "of no stated model"}`);
  if (header.latentSpace !== "unknown" && decoder.space !== header.latentSpace)
    throw new ModelMismatchError(`the stream is in latent space ${header.latentSpace}; this decoder reads ${decoder.space}`);
  if (SPACE_CHANNELS[decoder.space] !== channels || decoder.factor !== header.factor)
    throw new ModelMismatchError(`the stream has ${channels} channels at 1/${header.factor}; the ${decoder.space} decoder reads ${SPACE_CHANNELS[decoder.space]} at 1/${decoder.factor}`);
  start = now();
  const tiles = WHOLE_MAP_NORMS.has(decoder.space) ? null : tile;
  const sample = await runTiled((piece, shape) => decoder.run(piece, shape), latents, header.shape, decoder.factor, { tile: tiles, onTile });
  seconds.network = (now() - start) / 1000;
  start = now();
  let rgb = toRgb(sample, h * decoder.factor, w * decoder.factor, header.codedWidth, header.codedHeight);
  if (header.codedWidth !== header.width || header.codedHeight !== header.height)
    rgb = resizeLanczos(rgb, header.codedWidth, header.codedHeight, header.width, header.height);
  seconds.pixels = (now() - start) / 1000;
  return { header, latents, rgb, width: header.width, height: header.height, seconds };
}
