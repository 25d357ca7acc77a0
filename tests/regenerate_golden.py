"""Writes the golden streams of the current format version (tests/golden/vN): run once, when a format
version changes decoding, never at test time. Older versions' folders are never touched.

    python -m tests.regenerate_golden
"""

import json

from sdlite import decompress_latents

from .test_golden import CASES, CURRENT, _digest, _encode


def main() -> int:
    if (CURRENT / "expected.json").exists():
        raise SystemExit(f"{CURRENT} exists: golden files of a released format version are never rewritten")
    CURRENT.mkdir()
    expected = {}
    for seed, name in enumerate(CASES):
        data = _encode(name, seed)
        (CURRENT / f"{name}.sdz").write_bytes(data)
        expected[name] = {"method": CASES[name]["method"], "latents_sha256": _digest(decompress_latents(data)), "stream_sha256": _digest(data)}
    (CURRENT / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(expected)} golden streams into {CURRENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
