"""Turn the bytes of one uploaded file into an RGB image, refusing anything unsafe before decoding.

The server never trusts an upload: only a short list of raster formats is opened (Pillow would
otherwise also try EPS, which runs Ghostscript, and a dozen rarely used parsers), the pixel count
is read from the header and checked before any pixel is decoded (a 100 KB PNG can claim
50,000 x 50,000 pixels, 7.5 GB as RGB), and every failure becomes an `UploadError` with the HTTP
status a client should see and one line saying why.
"""

from __future__ import annotations

from emorec.data.imageio import Decoded, ImageLoadError, decode_rgb

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


def check_content_type(content_type: str | None, filename: str) -> str:
    """The part's media type, lower case; 415 unless it claims to be an image (or plain bytes,
    which are checked by content)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind in ALLOWED_CONTENT_TYPES):
        raise UploadError(415, f"{filename}: content type '{kind}' is not an image; send image/jpeg, image/png, image/webp, ...")
    return kind


_STATUS_BY_KIND = {"empty": 400, "corrupt": 400, "missing": 400, "format": 415, "too_large": 413}


def decode_upload(data: bytes, filename: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                  min_size: int | None = None) -> Decoded:
    """Decode `data` to RGB with EXIF orientation applied; JPEGs at reduced scale, >= `min_size`.

    The project's one decode path (`data.imageio.decode_rgb`), held to ALLOWED_FORMATS and
    `max_pixels`. `Decoded.full_size` is the photo's own size: what coordinates are reported in.
    Raises UploadError: 400 empty, truncated or corrupt; 413 more than `max_pixels`;
    415 not an image, or a format outside ALLOWED_FORMATS.
    """
    try:
        return decode_rgb(data, min_size, name=filename, formats=ALLOWED_FORMATS, max_pixels=max_pixels)
    except ImageLoadError as e:
        hint = "; the file may be truncated or corrupt" if e.kind == "corrupt" else ""
        raise UploadError(_STATUS_BY_KIND[e.kind], f"{filename}: {e.reason}{hint}") from None
