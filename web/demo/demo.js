// The demo page: pick or drop a .sdz stream, see the picture, its header and the decode time; with the original
// picture beside it when given. Query parameters: decoders=URL (a JSON map latent space -> { url, modelId }),
// ep=webgpu or ep=webnn (that execution provider first, wasm after; default wasm alone), threads=N (wasm threads;
// default all the browser reports), ort=URL (another onnxruntime-web build), wasm=URL (its .wasm folder).
// window.sdliteDemo is what web/test/browser.test.js drives.

import { Decoder, decodeImage } from "../src/decode.js";
import { rgbToRgba } from "../src/pixels.js";

const params = new URLSearchParams(location.search);
const ep = { webgpu: "webgpu", webnn: "webnn" }[params.get("ep")] ?? "wasm";
const dist = new URL(params.get("wasm") ?? "../node_modules/onnxruntime-web/dist/", location.href).href;
const ort = await import(params.get("ort") ?? `${dist}${ep === "wasm" ? "ort.wasm.min.mjs" : "ort.all.min.mjs"}`);
ort.env.wasm.wasmPaths = dist;
// wasm threads need cross-origin isolation (the COOP/COEP headers web/demo/server.js sends)
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Number(params.get("threads") ?? navigator.hardwareConcurrency) : 1;
const providers = ep === "webnn" ? [{ name: "webnn", deviceType: "cpu" }, "wasm"] : ep === "webgpu" ? ["webgpu", "wasm"] : ["wasm"];

const decodersUrl = new URL(params.get("decoders") ?? "decoders.json", location.href);
const config = await (await fetch(decodersUrl)).json();
const decoders = {}; // one Decoder (one session) per URL, reused by every later stream
function decoderFor(space, url = config[space]?.url, modelId = config[space]?.modelId) {
  if (!url) return null;
  const key = `${space} ${url}`;
  decoders[key] ??= new Decoder(ort, new URL(url, decodersUrl).href, { space, modelId, executionProviders: providers });
  return decoders[key];
}

const $ = (id) => document.getElementById(id);
function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function paint(canvas, rgba, width, height) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
}

function showHeader(result, bytes) {
  const { header, seconds } = result;
  const rows = [
    ["latent space", `${header.latentSpace} (model ${header.modelId})`],
    ["size", `${header.width} × ${header.height}` + (header.codedWidth !== header.width ? ` (coded at ${header.codedWidth} × ${header.codedHeight})` : "")],
    ["latent", header.shape.join(" × ")],
    ["format", `version ${header.version}, ${header.method === 1 ? "palette" : "entropy"} method`],
    ["bytes", `${bytes.toLocaleString()} (${((8 * bytes) / (header.width * header.height)).toFixed(3)} bpp)`],
    ["decode", `${(seconds.latents + seconds.network + seconds.pixels).toFixed(3)} s (latents ${seconds.latents.toFixed(3)}, network ${seconds.network.toFixed(3)}, pixels ${seconds.pixels.toFixed(3)}; ${ep}, ${ort.env.wasm.numThreads} threads)`],
  ];
  const body = $("header").querySelector("tbody");
  body.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { textContent: k }), Object.assign(document.createElement("td"), { textContent: v }));
    return tr;
  }));
  $("header").hidden = false;
}

/** Decode bytes with the page's decoder for their space (or the one given) and show them. */
async function show(bytes, decoder = null) {
  status("Decoding…");
  const result = await decodeImage(bytes, decoder ? () => decoder : (header) => decoderFor(header.latentSpace));
  paint($("decoded"), rgbToRgba(result.rgb, result.width, result.height), result.width, result.height);
  showHeader(result, bytes.length);
  status("Decoded.");
  return result;
}

async function showOriginal(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = $("original-canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  $("original-figure").hidden = false;
}

async function handle(files) {
  try {
    for (const file of files) {
      if (file.name.toLowerCase().endsWith(".sdz")) await show(new Uint8Array(await file.arrayBuffer()));
      else await showOriginal(file);
    }
  } catch (error) {
    status(`${error.name}: ${error.message}`, true);
  }
}

$("stream").addEventListener("change", (e) => handle(e.target.files));
$("original").addEventListener("change", (e) => handle(e.target.files));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files); });

// ---- for the browser test -------------------------------------------------------------------------------------------
async function pixelsOf(url) {
  const blob = await (await fetch(url)).blob();
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { colorSpace: "srgb" });
  context.drawImage(bitmap, 0, 0);
  return { data: context.getImageData(0, 0, bitmap.width, bitmap.height).data, width: bitmap.width, height: bitmap.height };
}

async function sha256(floats) {
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

globalThis.sdliteDemo = {
  providers: ep,
  threads: ort.env.wasm.numThreads,
  crossOriginIsolated: globalThis.crossOriginIsolated,
  /** Decode the stream at streamUrl with the decoder at decoderUrl (`repeats` times); compare with the PNG at pngUrl. */
  async check({ stream, decoder, space, png, repeats = 1 }) {
    const bytes = new Uint8Array(await (await fetch(stream)).arrayBuffer());
    const times = [];
    let result;
    for (let i = 0; i < repeats; i++) {
      const start = performance.now();
      result = await show(bytes, decoderFor(space, decoder));
      times.push((performance.now() - start) / 1000);
    }
    const reference = await pixelsOf(png);
    let sum = 0, max = 0;
    const { rgb, width, height } = result;
    if (reference.width !== width || reference.height !== height) return { error: `size ${width}x${height}, reference ${reference.width}x${reference.height}` };
    for (let i = 0; i < width * height; i++)
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(rgb[i * 3 + c] - reference.data[i * 4 + c]);
        sum += d;
        if (d > max) max = d;
      }
    return { latentsSha256: await sha256(result.latents), meanAbs: sum / (width * height * 3), maxAbs: max, times, seconds: result.seconds, width, height };
  },
  showOriginal: async (url) => showOriginal(await (await fetch(url)).blob()),
  /** A stream that should fail (with the page's decoder for `space`, or the one at `url`): the error's name and message. */
  async failure(stream, space, url) {
    try {
      const bytes = typeof stream === "string" ? new Uint8Array(await (await fetch(stream)).arrayBuffer()) : new Uint8Array(stream);
      await decodeImage(bytes, space ? () => decoderFor(space, url) : (header) => decoderFor(header.latentSpace));
      return null;
    } catch (error) {
      return { name: error.name, message: error.message };
    }
  },
};
status("Ready: pick or drop a .sdz file.");
document.body.dataset.ready = "1";
