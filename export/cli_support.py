"""What the export package's command lines share: one exit-code convention and one-line errors."""

from __future__ import annotations

import sys

from .errors import ExportError

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


def run_task(task, describe) -> int:
    """Call task(); print describe(result) and return 0, or print one line and return 2 (ExportError) or
    130 (Ctrl-C: nothing was written, the staging folders clean themselves up)."""
    try:
        result = task()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(describe(result))
    return EXIT_OK
