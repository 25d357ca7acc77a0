"""The library's error hierarchy: every error sdlite raises on purpose derives from SdliteError."""

from __future__ import annotations

__all__ = [
    "SdliteError",
    "InvalidImageError",
    "BitstreamError",
    "ModelNotFoundError",
    "ModelMismatchError",
    "BundleError",
    "ProviderError",
    "OptionError",
    "DecoderNote",
]


class SdliteError(Exception):
    """Base class of every error sdlite raises."""


class InvalidImageError(SdliteError, ValueError):
    """The input image cannot be compressed (unreadable, too small, too large, wrong dtype...)."""


class BitstreamError(SdliteError, ValueError):
    """Compressed data is truncated, corrupt, of an unknown version, or exceeds a safety limit."""


class ModelNotFoundError(SdliteError, FileNotFoundError):
    """No model bundle at the given place; the message names the command that makes one."""


class ModelMismatchError(SdliteError):
    """The data was encoded with another model than the one given for decoding."""


class BundleError(SdliteError):
    """A model bundle is unreadable or damaged (bad manifest, a file truncated or changed since export)."""


class ProviderError(SdliteError, RuntimeError):
    """An execution provider was required (strict mode) but did not attach, or its plugin cannot be loaded here."""


class OptionError(SdliteError, ValueError):
    """An option has an invalid value; the message lists the valid choices."""


class DecoderNote(UserWarning):
    """A stream was decoded by another decoder of its latent space than the one that made it (a one-line note)."""
