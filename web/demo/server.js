// A static server for the demo page and the browser test, on 127.0.0.1 only: / is the repository (web/ and
// tests/conformance/ are what the page reads), /shared/ the shared models folder, /refs/ the browser references
// (python -m bench browser-refs). It sends the COOP/COEP headers that give a page cross-origin isolation, which
// onnxruntime-web's wasm threads need. Run it alone with `npm run demo` (prints the demo's URL).

import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { resolve, join, extname, sep, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".wasm": "application/wasm",
                ".png": "image/png", ".onnx": "application/octet-stream", ".sdz": "application/octet-stream", ".map": "application/json" };
const ALLOWED = ["web", "tests/conformance"]; // what / serves of the repository

function inside(base, path) {
  const full = resolve(base, "." + sep + path);
  return full === base || full.startsWith(base + sep) ? full : null;
}

/** Start serving; resolves to { server, url }. mounts: { "/shared/": folder, "/refs/": folder }. */
export function serve({ mounts = {}, port = 0 } = {}) {
  const server = createServer((request, response) => {
    let path;
    try {
      path = decodeURIComponent(new URL(request.url, "http://127.0.0.1").pathname);
    } catch {
      response.writeHead(400, { "Content-Type": "text/plain" }).end("bad request path"); // a malformed %-escape must not stop the server
      return;
    }
    let file = null;
    for (const [prefix, folder] of Object.entries(mounts))
      if (folder && path.startsWith(prefix)) file = inside(resolve(folder), path.slice(prefix.length));
    if (file === null && ALLOWED.some((a) => path.startsWith(`/${a}/`))) file = inside(ROOT, path.slice(1));
    let size = -1;
    try {
      if (file) size = statSync(file).isFile() ? statSync(file).size : -1;
    } catch {
      size = -1;
    }
    if (size < 0) {
      response.writeHead(404, { "Content-Type": "text/plain" }).end(`not found: ${path}`);
      return;
    }
    response.writeHead(200, {
      "Content-Type": TYPES[extname(file)] ?? "application/octet-stream",
      "Content-Length": size,
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
      "Cache-Control": "no-store",
    });
    createReadStream(file).pipe(response);
  });
  return new Promise((done) => server.listen(port, "127.0.0.1", () => done({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const shared = process.env.SDLITE_SHARED ?? join(ROOT, "..", "shared");
  const refs = process.env.SDLITE_BROWSER_OUT ?? join(ROOT, "bench-out", "browser");
  const { url } = await serve({ mounts: { "/shared/": shared, "/refs/": refs }, port: Number(process.env.PORT ?? 8765) });
  console.log(`demo: ${url}/web/demo/index.html (serving ${ROOT}, ${shared} at /shared/ and ${refs} at /refs/)`);
}
