"""Turn the bytes of one uploaded file into an RGB image, refusing anything unsafe before decoding.

The server never trusts an upload: only a short list of raster formats is opened (Pillow would
otherwise also try EPS, which runs Ghostscript, and a dozen rarely used parsers), the pixel count
is read from the header and checked before any pixel is decoded (a 100 KB PNG can claim
50,000 x 50,000 pixels, 7.5 GB as RGB), and every failure becomes an `UploadError` with the HTTP
status a client should see and one line saying why.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from emorec.data.imageio import to_rgb

# Formats a browser or phone produces. Pillow identifies by content, not by name or header.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Content types accepted on a part: browsers send image/*, curl and scripts often octet-stream.
ALLOWED_CONTENT_TYPES = ("application/octet-stream", "")
DEFAULT_MAX_PIXELS = 50_000_000  # a 50 MP phone photo; JPEG draft mode decodes it at 1/8 scale


class UploadError(Exception):
    """A refused upload: `status` is the HTTP code, the message one line for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(" ".join(str(message).split()))
        self.status = status


def check_content_type(content_type: str | None, filename: str) -> None:
    """415 unless the part claims to be an image (or plain bytes, which is checked by content)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind in ALLOWED_CONTENT_TYPES):
        raise UploadError(415, f"{filename}: content type '{kind}' is not an image; send image/jpeg, image/png, image/webp, ...")


def decode_upload(data: bytes, filename: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                  min_size: int | None = None) -> Image.Image:
    """Decode `data` to RGB with EXIF orientation applied; JPEGs at reduced scale, >= `min_size`.

    Raises UploadError: 400 empty, truncated or corrupt; 413 more than `max_pixels`;
    415 not an image, or a format outside ALLOWED_FORMATS.
    """
    if not data:
        raise UploadError(400, f"{filename}: empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns above ~89 MP and raises above ~179 MP; our own limit is the one that counts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError as e:
            raise UploadError(413, f"{filename}: image too large ({e}); the limit is {max_pixels:,} pixels")
        except Image.UnidentifiedImageError:
            raise UploadError(415, f"{filename}: not an image in a supported format ({', '.join(ALLOWED_FORMATS)})")
        except Exception as e:  # noqa: BLE001 - header parsers raise many types for hostile input
            raise UploadError(400, f"{filename}: corrupt image header ({type(e).__name__})")
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(413, f"{filename}: {width} x {height} pixels is over the limit of {max_pixels:,} pixels; send a smaller image")
        if width < 1 or height < 1:
            raise UploadError(400, f"{filename}: image has no pixels ({width} x {height})")
        try:
            if min_size and image.format == "JPEG":
                image.draft(image.mode, (min_size, min_size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image)
        except Exception as e:  # noqa: BLE001 - truncated data, bad tiles, bad EXIF: all one answer
            reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise UploadError(400, f"{filename}: cannot decode the image ({reason}); the file may be truncated or corrupt")
