"""sdlite's two loggers: "sdlite" (details, shown with -v) and "sdlite.progress" (long work a user should hear
about: first-use fetching and hashing, tiles, U-Net steps; the CLI shows it without -v)."""

import logging

log = logging.getLogger("sdlite")
progress_log = logging.getLogger("sdlite.progress")
