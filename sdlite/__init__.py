"""sdlite: an image codec in Stable Diffusion's latent space, on onnxruntime + numpy + Pillow.

    from sdlite import compress, decompress
    data = compress("photo.png", model="taesd")      # TAESD: fetched once (5-10 MB), built without torch
    image = decompress(data, model="taesd")
"""

from .bitstream import DEFAULT_MAX_PIXELS
from .codec import compress, compress_latents, decompress, decompress_latents, info
from .errors import (
    BitstreamError,
    BundleError,
    DecoderNote,
    InvalidImageError,
    ModelMismatchError,
    ModelNotFoundError,
    OptionError,
    ProviderError,
    SdliteError,
)
from .model import Model, load_model
from .options import CompressOptions
from .sessions import clear_cache

__version__ = "0.1.0"

__all__ = [
    "compress",
    "decompress",
    "compress_latents",
    "decompress_latents",
    "info",
    "load_model",
    "Model",
    "CompressOptions",
    "clear_cache",
    "DEFAULT_MAX_PIXELS",
    "SdliteError",
    "InvalidImageError",
    "BitstreamError",
    "ModelNotFoundError",
    "ModelMismatchError",
    "BundleError",
    "ProviderError",
    "OptionError",
    "DecoderNote",
    "__version__",
]
