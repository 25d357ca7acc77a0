"""Pillow plugin for .sdz: `import sdlite.pillow` registers the format SDZ (extension .sdz, magic SDLZ),
as pillow-heif and pillow-jxl-plugin do for theirs.

    import sdlite.pillow
    from PIL import Image
    sdlite.pillow.set_model("models/taesd")   # else $SDLITE_MODEL or the only bundle in models/
    with Image.open("photo.sdz") as im:         # reads the header only: size, mode, info
        im.thumbnail((256, 256))                # decodes on first use of the pixels
    Image.open("photo.png").save("photo.sdz", quality=60)          # or target_bytes=, method=, model=, effort=

Opening reads the header only (no model, no decoding); `load()` decodes with the model set by
set_model(), else the one `decompress` would find. A corrupt stream raises Pillow's usual errors
(PIL.UnidentifiedImageError on open, OSError on load) that are also sdlite errors carrying sdlite's
message.
"""

from __future__ import annotations

import io
import threading

from PIL import Image, ImageFile, UnidentifiedImageError

from .bitstream import MAGIC
from .codec import compress, decompress, info
from .errors import BitstreamError, ModelNotFoundError, SdliteError
from .model import Model, load_model

__all__ = ["register", "set_model", "FORMAT", "EXTENSION", "SdzImageFile", "SdzFormatError", "SdzDecodeError"]

FORMAT = "SDZ"
EXTENSION = ".sdz"
MIME = "image/x-sdz"
MAX_STREAM_BYTES = 256 << 20
"""Open refuses larger files: a .sdz holds a latent, kilobytes to a few megabytes."""
SAVE_OPTIONS = ("quality", "target_bytes", "method", "effort", "scale", "dither", "model", "tile", "max_pixels")

_model: Model | None = None
_model_lock = threading.Lock()


class SdzFormatError(UnidentifiedImageError, BitstreamError):
    """Image.open of a file with the SDZ magic whose header is corrupt (also an sdlite BitstreamError)."""


class SdzDecodeError(OSError, SdliteError):
    """load() of an SDZ image failed; the message is sdlite's."""


def set_model(model=None, **options) -> Model | None:
    """The bundle (path, name or Model) that loads and saves use; None forgets it. options go to
    sdlite.load_model (providers, threads, ...)."""
    global _model
    with _model_lock:
        _model = None if model is None else load_model(model, **options)
        return _model


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
        data = self.fp.read(MAX_STREAM_BYTES + 1)
        if len(data) > MAX_STREAM_BYTES:
            raise SdzFormatError(f"SDZ file larger than {MAX_STREAM_BYTES} bytes")
        try:
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
                picture = decompress(self._stream, model=_current_model(), max_pixels=None)
            except ModelNotFoundError:
                raise
            except SdliteError as exc:
                raise SdzDecodeError(f"cannot decode SDZ image: {exc}") from None
            self._decoded = True
            if self.fp and self._exclusive_fp:
                self.fp.close()
            self.fp = io.BytesIO(picture.tobytes())
            self.tile = [ImageFile._Tile("raw", (0, 0) + self.size, 0, ("RGB", 0, 1))]
        return super().load()

    def load_seek(self, pos: int) -> None:  # the pixels come from memory, not from the file
        pass


def _save(im: Image.Image, fp, filename) -> None:
    options = {key: im.encoderinfo[key] for key in SAVE_OPTIONS if key in im.encoderinfo}
    model = _current_model(options.pop("model", None))
    try:
        data = compress(im, model=model, **options)
    except SdliteError as exc:
        raise OSError(f"cannot write SDZ image: {exc}") from exc
    fp.write(data)


def register() -> None:
    """Register SDZ with Pillow (open, save, extension, MIME type); safe to call more than once."""
    Image.register_open(FORMAT, SdzImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)


register()
