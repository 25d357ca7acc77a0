"""Errors of the export step (kept apart from the runtime's hierarchy, but rooted in it)."""

from sdlite.errors import SdliteError


class ExportError(SdliteError):
    """An export failed in a way the user can act on; the message says how."""


class ValidationError(ExportError):
    """An exported component differs from PyTorch beyond the tolerance."""
