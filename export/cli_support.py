"""What the export package's command lines share: one exit-code convention and one-line errors."""

from __future__ import annotations

import sys

from .errors import ExportError

from sdlite.errors import SdliteError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_task(task, describe) -> int:
    """Call task(); print describe(result) and return 0, or print one line and return 2 (ExportError, or an
    SdliteError about a bundle or option), 1 (the file system failed) or 130 (Ctrl-C: nothing was written,
    the staging folders clean themselves up)."""
    try:
        result = task()
    except (ExportError, SdliteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(describe(result))
    return EXIT_OK
