"""Pillow plugin for .sdz: `import sdlite.pillow` registers the format SDZ (extension .sdz, magic SDLZ),
as pillow-heif and pillow-jxl-plugin do for theirs.

    import sdlite.pillow
    from PIL import Image
    sdlite.pillow.set_model("models/taesd")   # optional: else decoding finds the stream's decoder, saving uses taesd
    with Image.open("photo.sdz") as im:         # reads the header only: size, mode, info
        im.thumbnail((256, 256))                # decodes on first use of the pixels
    Image.open("photo.png").save("photo.sdz", quality=60)          # or target_bytes=, method=, model=, effort=

Opening reads the header and no more of the file than the header's shape justifies (no model, no
decoding), and refuses images over max_pixels (set_max_pixels; default sdlite.DEFAULT_MAX_PIXELS) as
`decompress` does; `load()` decodes with the model set by set_model(), else the decoder `decompress`
finds for the stream with no model named (its own by model id, a shipped one trained for the codec, or its
latent space's default). A corrupt stream raises Pillow's usual errors (PIL.UnidentifiedImageError on open, OSError on
load) that are also sdlite errors carrying sdlite's message.

Saving compresses before the target file is touched: Pillow opens (and empties) a named target before
calling a format's writer, so register() wraps Image.Image.save to run sdlite's encoder first when the
format is SDZ; an unreachable target_bytes or a bad option then leaves an existing file as it was.
"""

from __future__ import annotations

import functools
import io
import os
import threading

from PIL import Image, ImageFile, UnidentifiedImageError

from .bitstream import DEFAULT_MAX_PIXELS, MAGIC, read_stream
from .codec import compress, decompress, info
from .options import CompressOptions
from .errors import BitstreamError, ModelNotFoundError, OptionError, SdliteError
from .model import Model, load_model

__all__ = ["register", "set_model", "set_max_pixels", "FORMAT", "EXTENSION", "SdzImageFile", "SdzFormatError", "SdzDecodeError",
           "SdzEncodeError"]

FORMAT = "SDZ"
EXTENSION = ".sdz"
MIME = "image/x-sdz"
SAVE_OPTIONS = ("quality", "target_bytes", "method", "effort", "scale", "dither", "model", "tile", "max_pixels")
_PREPARED = "_sdlite_stream"  # encoderinfo key: the stream compressed before Pillow opened the target

_model: Model | None = None
_model_lock = threading.Lock()
_max_pixels: int | None = DEFAULT_MAX_PIXELS


class SdzFormatError(UnidentifiedImageError, BitstreamError):
    """Image.open of a file with the SDZ magic whose header is corrupt (also an sdlite BitstreamError)."""


class SdzDecodeError(OSError, SdliteError):
    """load() of an SDZ image failed; the message is sdlite's."""


class SdzEncodeError(OSError, SdliteError):
    """Saving an SDZ image failed (Pillow's OSError, and an sdlite error as the README promises); the message is sdlite's."""


def set_model(model=None, **options) -> Model | None:
    """The bundle (path, name or Model) that loads and saves use; None forgets it. options go to
    sdlite.load_model (providers, threads, ...)."""
    global _model
    with _model_lock:
        _model = None if model is None else load_model(model, **options)
        return _model


def set_max_pixels(max_pixels: int | None) -> None:
    """The largest image (width * height) that opening and loading accept (None: no limit)."""
    global _max_pixels
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise OptionError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    _max_pixels = max_pixels


def _current_model(explicit=None) -> Model:
    if explicit is not None:
        return load_model(explicit)
    with _model_lock:
        if _model is not None:
            return _model
    try:
        return load_model(None)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"no model for SDZ images: call sdlite.pillow.set_model(PATH), or {exc}") from None


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class SdzImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "sdlite image (Stable Diffusion latent)"

    def _open(self) -> None:
        try:
            data = read_stream(self.fp, max_pixels=_max_pixels)  # no further than the header's shape justifies
            meta = info(data)
        except BitstreamError as exc:
            raise SdzFormatError(f"cannot open SDZ image: {exc}") from None
        self._stream = data
        self._decoded = False
        self._mode = "RGB"
        self._size = (meta["width"], meta["height"])
        self.info.update({key: meta[key] for key in ("method", "model_id", "latent_space", "format_version", "bpp", "scale")})
        self.info["bytes"] = meta["total_bytes"]
        self.n_frames, self.is_animated = 1, False
        self.tile = []

    def load(self):
        if not self._decoded and self._stream is not None:
            try:
                with _model_lock:
                    chosen = _model  # None: decompress finds the decoder the stream names (sdlite.registry)
                picture = decompress(self._stream, model=chosen, max_pixels=_max_pixels)
            except ModelNotFoundError:
                raise
            except SdliteError as exc:
                raise SdzDecodeError(f"cannot decode SDZ image: {exc}") from None
            self._decoded = True
            if self.fp and getattr(self, "_exclusive_fp", False):  # Pillow opened the file: the stream is read, close it
                self.fp.close()
            self.fp = io.BytesIO(picture.tobytes())
            self.tile = [("raw", (0, 0) + self.size, 0, ("RGB", 0, 1))]  # the tuple form every Pillow from the floor up reads
        return super().load()

    def load_seek(self, pos: int) -> None:  # the pixels come from memory, not from the file
        pass


def _compressed(im: Image.Image, params: dict) -> bytes:
    try:
        request = CompressOptions.from_keywords(params)  # every option checked before the model loads
        return compress(im, model=_current_model(params.get("model")), options=request)
    except SdzEncodeError:
        raise
    except SdliteError as exc:
        raise SdzEncodeError(f"cannot write SDZ image: {exc}") from exc


def _save(im: Image.Image, fp, filename) -> None:
    data = im.encoderinfo.get(_PREPARED)
    fp.write(data if data is not None else _compressed(im, im.encoderinfo))


def _save_all(im: Image.Image, fp, filename) -> None:
    if getattr(im, "n_frames", 1) > 1 or im.encoderinfo.get("append_images"):
        raise SdzEncodeError("cannot write SDZ image: an SDZ file holds one image; save the frames one by one")
    _save(im, fp, filename)


def _is_sdz(fp, format) -> bool:
    if format:
        return str(format).upper() == FORMAT
    name = fp if isinstance(fp, (str, bytes, os.PathLike)) else getattr(fp, "name", "")
    if not isinstance(name, (str, bytes, os.PathLike)):
        return False
    extension = os.path.splitext(os.fsdecode(name))[1].lower()
    return extension == EXTENSION


def _compress_first(save):
    """Image.Image.save, compressing SDZ images before Pillow opens (and empties) the target file."""

    @functools.wraps(save)
    def wrapper(self, fp, format=None, **params):
        if _is_sdz(fp, format) and _PREPARED not in params:
            if params.get("save_all") and (getattr(self, "n_frames", 1) > 1 or params.get("append_images")):
                raise SdzEncodeError("cannot write SDZ image: an SDZ file holds one image; save the frames one by one")
            params = {**params, _PREPARED: _compressed(self, params)}  # this call's options (older Pillow keeps stale encoderinfo)
        return save(self, fp, format, **params)

    wrapper._sdlite_compress_first = True
    return wrapper


def register() -> None:
    """Register SDZ with Pillow (open, save, extension, MIME type); safe to call more than once."""
    Image.register_open(FORMAT, SdzImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_save_all(FORMAT, _save_all)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    if not getattr(Image.Image.save, "_sdlite_compress_first", False):
        Image.Image.save = _compress_first(Image.Image.save)


register()
