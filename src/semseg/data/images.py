"""Decoding images and masks into numpy arrays, the same way for training and serving.

Images of any mode become RGB uint8 (H, W, 3), upright per their EXIF orientation. Masks must be
single-channel 8-bit PNGs (palette ``P`` or grayscale ``L``): the palette index or gray value is
the label, colours are never looked at.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import UserError

MASK_MODES = ("P", "L")
MASK_RULE = "masks must be single-channel 8-bit PNGs (palette 'P' or grayscale 'L') whose pixel values are class ids"
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def set_pillow_limits() -> None:
    """Pillow's process-wide switches, set when this module is imported and never per image.

    They are globals, and images are opened in threads (a server's, a loader's): changing them
    around each open would let one thread see another's temporary value. Pillow's own pixel limit
    is off because ``open_image`` applies the caller's ``max_pixels`` instead. A cut-off file must
    fail to decode, never come out as a grey half picture; importing GluonCV turns Pillow's
    ``LOAD_TRUNCATED_IMAGES`` on for the whole process, so the code that imports GluonCV
    (``model.factory``, ``train.losses``) calls this again right after.
    """
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False


set_pillow_limits()


def open_image(source, max_pixels: int | None = None) -> Image.Image:
    """Open ``source`` (path or bytes) lazily, refusing pixel counts above ``max_pixels``.

    Only the header is read here; ``max_pixels`` guards against decompression bombs before any
    pixel is decoded.
    """
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    image = Image.open(stream)
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ImageTooLarge(image.width, image.height, max_pixels)
    return image


class ImageTooLarge(UserError):
    def __init__(self, width: int, height: int, max_pixels: int):
        super().__init__(f"The image is {width}x{height} pixels, more than the limit of {max_pixels} pixels")
        self.width, self.height = width, height


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF rotation, known from the header alone."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is ignored, as viewers do
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return image.height, image.width
    return image.width, image.height


def describe(image: Image.Image) -> str:
    return f"a {image.format or 'image'} of mode {image.mode}"


def check_mask(
    mask: Image.Image, name: str, image_size: tuple[int, int] | None = None, image_name: str = "", where: str = ""
) -> None:
    """The one check of a mask, from its header: its mode, and its size against its image's when given.

    File mode, Pipe mode and decoding all call it, so a mistake reads the same wherever it is found.
    ``where`` ("the 'train' channel, epoch 0") opens the sentence for masks that have no path.
    """
    the_mask = f"In {where}, the mask {name}" if where else f"The mask {name}"
    if mask.mode not in MASK_MODES:
        raise UserError(f"{the_mask} is {describe(mask)}; {MASK_RULE}")
    if image_size is not None:
        check_mask_size(mask.size, the_mask, image_size, image_name)


def check_mask_size(mask_size: tuple[int, int], the_mask: str, image_size: tuple[int, int], image_name: str) -> None:
    """A mask covers its image pixel for pixel; ``the_mask`` opens the sentence ("The mask a.png")."""
    if mask_size != image_size:
        raise UserError(
            f"{the_mask} is {mask_size[0]}x{mask_size[1]} but its image {image_name} is "
            f"{image_size[0]}x{image_size[1]}; a mask must have the size of its image"
        )


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Decode to upright RGB uint8 (H, W, 3); transparency is dropped, grayscale replicated."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:
        pass
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode == "I;16" or image.mode == "I":
        array = np.asarray(image, dtype=np.float32)
        peak = float(array.max()) or 1.0
        gray = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_rgb(path) -> np.ndarray:
    with open_image(path) as image:
        return to_rgb_array(image)


def read_mask(path) -> np.ndarray:
    """Decode a label PNG to uint8 (H, W) of raw encoded values (before any label map)."""
    with open_image(path) as image:
        check_mask(image, str(path))
        return np.asarray(image, dtype=np.uint8)
