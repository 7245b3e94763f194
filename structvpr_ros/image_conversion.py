"""sensor_msgs/Image and sensor_msgs/CompressedImage -> RGB uint8 (H, W, 3) numpy array.

Our own replacement for cv_bridge (whose PyPI port is broken here). Works on anything
with the message fields (duck typing): rclpy messages (``data`` is ``array.array`` or
``bytes``) and rosbags dataclasses (``data`` is a uint8 numpy array).

Bad input raises ``ImageConversionError`` (a ``ValueError``) naming the problem, so the
node can count and skip the frame: wrong sizes, encodings and byte counts, images above
``max_pixels`` (compressed ones checked from their header, before decoding), truncated
JPEGs and any damaged PNG (libpng checks every chunk's CRC). A JPEG damaged inside its
entropy-coded data can still decode to a wrong picture: JPEG has no checksum, and
libjpeg notices only some damage (benchmarks/corrupt_images.py, 100 trials each on a
CamVid frame: 64 zeroed bytes mid-file gave 39 visibly wrong decodes without even a
warning, one flipped bit 14), so that cannot be detected reliably.

The inverse, ``rgb_to_image_fields``, builds Image fields from an RGB array for tests
and the bag writer.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

# a network input size (W, H), or a function of the image's (width, height) giving one
ShrinkTo = tuple[int, int] | Callable[[int, int], tuple[int, int]] | None


class ImageConversionError(ValueError):
    """An image message cannot be turned into an RGB picture."""


# encoding -> (bytes per pixel, OpenCV code turning the (H, W[, C]) pixels into RGB).
# 8UC1 / 8UC3 carry no colour information; like cv_bridge we read them as mono8 / bgr8,
# the layout cv_bridge.cv2_to_imgmsg(passthrough) produces from OpenCV images.
# OpenCV names a Bayer pattern after the 2x2 block starting at pixel (1, 1), ROS after the
# one starting at (0, 0): ROS bayer_rggb8 is OpenCV "BayerBG" (verified against
# rosbags-image and by re-mosaicing real images, see test/test_image_conversion.py).
_RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "8UC3": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, cv2.COLOR_GRAY2RGB),
    "mono16": (2, cv2.COLOR_GRAY2RGB),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2RGB),
    "bayer_rggb16": (2, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": (2, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": (2, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": (2, cv2.COLOR_BayerGB2RGB),
}
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)
_DEPTH_ENCODINGS = ("16UC1", "32FC1")
# Whole-pixel layouts that can be resized before their colour conversion (not Bayer / 4:2:2).
_RESIZABLE_ENCODINGS = ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "mono8", "8UC1", "mono16")
_YUV422_ENCODINGS = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")
# one 16-bit value per pixel, byte order from is_bigendian; Bayer demosaiced at full depth, then the high byte kept
_SIXTEEN_BIT_ENCODINGS = ("mono16", "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16")

# Position of R, G, B in the 2x2 Bayer tile, in ROS order (row-major: (0,0) (0,1) (1,0) (1,1)).
_BAYER_TILES = {
    "bayer_rggb8": "RGGB",
    "bayer_bggr8": "BGGR",
    "bayer_gbrg8": "GBRG",
    "bayer_grbg8": "GRBG",
    "bayer_rggb16": "RGGB",
    "bayer_bggr16": "BGGR",
    "bayer_gbrg16": "GBRG",
    "bayer_grbg16": "GRBG",
}


def message_to_rgb(msg, max_pixels: int | None = None, shrink_to: ShrinkTo = None) -> np.ndarray:
    """Image or CompressedImage (told apart by the ``format`` field) -> RGB uint8 (H, W, 3).

    ``max_pixels``: refuse larger images (a compressed one from its header, before decoding).
    ``shrink_to`` (W, H): the caller needs no more pixels than this (a network input), so
    work at reduced size: a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg while it
    stays at least that big, and 8-bit colour / mono images are resized to exactly that
    size before their colour conversion. It may be a function of the image's (width, height)
    (an encoder's ``InputRule.size_for``: the size follows the camera's aspect). None: full
    resolution (ORB features need it).
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, max_pixels, shrink_to)
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg, max_pixels, shrink_to)
    raise ImageConversionError(
        f"{type(msg).__name__} is neither a sensor_msgs/Image nor a sensor_msgs/CompressedImage"
    )


def image_to_rgb(msg, max_pixels: int | None = None, shrink_to: ShrinkTo = None) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 (H, W, 3), a fresh writable C-contiguous array (see ``message_to_rgb``)."""
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding in _DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"encoding {encoding!r} is a depth image, not a camera image: subscribe to the colour topic"
        )
    if encoding not in _RAW_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    bytes_per_pixel, to_rgb = _RAW_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{encoding} image has zero size ({width}x{height})")
    _check_pixel_count(width, height, max_pixels, encoding)
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(f"{encoding} image has odd width {width}: 4:2:2 pixels come in pairs")
    if encoding in _BAYER_TILES and (width < 3 or height < 3):
        # OpenCV's demosaicing returns an all-black picture below 3x3.
        raise ImageConversionError(f"{encoding} image {width}x{height} is too small to demosaic (at least 3x3)")
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding} image step {step} is smaller than width*bytes_per_pixel = {width}*{bytes_per_pixel}"
        )
    data = _data_as_uint8(msg.data)
    if data.size != step * height:
        raise ImageConversionError(
            f"{encoding} image {width}x{height} step {step} needs {step * height} bytes of data, got {data.size}"
        )

    # One (H, W, bytes_per_pixel) view over the buffer that skips any row padding; no copy yet.
    pixels = data.reshape(height, step)[:, :row_bytes].reshape(height, width, bytes_per_pixel)
    if encoding in _SIXTEEN_BIT_ENCODINGS:
        byte_order = ">" if msg.is_bigendian else "<"
        native = pixels.view(np.dtype(f"{byte_order}u2"))[:, :, 0].astype(np.uint16)  # OpenCV wants native order
        if encoding not in _RESIZABLE_ENCODINGS:  # 16-bit Bayer: demosaic at full depth
            return (cv2.cvtColor(native, to_rgb) >> 8).astype(np.uint8)
        pixels = (native >> 8).astype(np.uint8)  # mono16: its high byte, then as mono8
    elif bytes_per_pixel == 1:
        pixels = pixels[:, :, 0]
    shrink_to = shrink_to(width, height) if callable(shrink_to) else shrink_to
    if shrink_to is not None and encoding in _RESIZABLE_ENCODINGS and width * height > shrink_to[0] * shrink_to[1]:
        # shrink first: the colour conversion then touches the small image only
        pixels = cv2.resize(np.ascontiguousarray(pixels), tuple(shrink_to), interpolation=cv2.INTER_AREA)
    if to_rgb is None:
        return pixels.copy()  # never hand out a view of the message buffer
    return cv2.cvtColor(np.ascontiguousarray(pixels), to_rgb)


def compressed_to_rgb(msg, max_pixels: int | None = None, shrink_to: ShrinkTo = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG, image_transport style format) -> RGB uint8 (H, W, 3).

    ``format`` is "jpeg", "png" or image_transport's "<encoding>; <codec> compressed
    <compressed encoding>". The codec itself is recognised from the bytes; the format
    string decides the channel order (image_transport stores colour as bgr8).
    ``max_pixels`` is checked from the header, before anything is decoded.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"CompressedImage format {fmt!r} is a depth image, not a camera image")
    data = _data_as_uint8(msg.data)
    if data.size == 0:
        raise ImageConversionError(f"CompressedImage (format {fmt!r}) has no data")
    undecodable = ImageConversionError(
        f"CompressedImage (format {fmt!r}, {data.size} bytes) could not be decoded: corrupt or not JPEG/PNG")
    head = data[:_HEADER_SEARCH_BYTES].tobytes()
    size = compressed_image_size(head)
    if size is None:
        raise undecodable
    _check_pixel_count(*size, max_pixels, f"CompressedImage (format {fmt!r})")  # before any decoding
    shrink_to = shrink_to(*size) if callable(shrink_to) else shrink_to
    bgr = cv2.imdecode(data, _reduced_decode_flag(head, size, shrink_to))
    if bgr is None:
        raise undecodable
    # A producer that compressed an rgb8 buffer as is says so after "compressed"; the
    # decoder then hands back RGB where it thinks it returns BGR.
    compressed_encoding = fmt.partition("compressed")[2].strip()
    if compressed_encoding == "rgb8":
        return bgr
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _reduced_decode_flag(head: bytes, size: tuple[int, int], shrink_to: tuple[int, int] | None) -> int:
    """IMREAD_REDUCED_COLOR_{8,4,2}: the largest JPEG DCT scaling of ``size`` that stays >= ``shrink_to``.

    PNG has no reduced decode (OpenCV would decode it in full, then resize): full colour.
    """
    if shrink_to is not None and head.startswith(b"\xff\xd8"):
        for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if -(-size[0] // factor) >= shrink_to[0] and -(-size[1] // factor) >= shrink_to[1]:
                return flag
    return cv2.IMREAD_COLOR


# JPEG metadata (EXIF, ICC profile, thumbnails) may precede the frame header; 1 MB is plenty
_HEADER_SEARCH_BYTES = 1 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0..CF except DHT (C4), JPG (C8), DAC (CC)
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field: TEM and RST0..7 (SOI/EOI end or start the walk)
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def compressed_image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame header; None if ``head``
    is neither (or is cut before the size)."""
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None  # every segment starts with a marker: the header is damaged
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(head):
                return None
            return int.from_bytes(head[pos + 7:pos + 9], "big"), int.from_bytes(head[pos + 5:pos + 7], "big")
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(head[pos + 2:pos + 4], "big")
    return None


def _check_pixel_count(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageConversionError(
            f"{what} is {width}x{height} = {width * height} pixels, more than max_pixels = {max_pixels}")


def rgb_to_image_fields(
    rgb: np.ndarray, encoding: str, *, is_bigendian: bool = False, row_padding: int = 0
) -> dict:
    """RGB uint8 (H, W, 3) -> sensor_msgs/Image fields {height, width, encoding, is_bigendian, step, data}.

    ``data`` is ``bytes`` (assign it to an rclpy message as is; wrap it with
    ``np.frombuffer`` for rosbags). ``row_padding`` appends that many zero bytes to each
    row, as drivers with aligned rows do. ``is_bigendian`` matters for 16-bit encodings only
    (their values are the 8-bit ones x 257, so the high byte reads back exactly).
    Lossy encodings: mono* (luma), yuv422 variants (chroma shared by pixel pairs), bayer
    (one colour per pixel).
    """
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {_describe_array(rgb)}")
    if encoding not in _RAW_ENCODINGS:
        raise ValueError(f"cannot produce encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if row_padding < 0:
        raise ValueError(f"row_padding must be >= 0, got {row_padding}")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image has zero size ({width}x{height})")

    pixels = _encode_pixels(rgb, encoding, is_bigendian)
    rows = pixels.reshape(height, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": bool(is_bigendian) and encoding in _SIXTEEN_BIT_ENCODINGS,
        "step": rows.shape[1],
        "data": np.ascontiguousarray(rows).tobytes(),
    }


def _encode_pixels(rgb: np.ndarray, encoding: str, is_bigendian: bool) -> np.ndarray:
    """Pixels of ``encoding`` as a uint8 array whose rows are the message rows (before padding)."""
    if encoding == "rgb8":
        return rgb
    if encoding in ("bgr8", "8UC3"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "rgba8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    if encoding == "bgra8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    if encoding in ("mono8", "8UC1"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding in _SIXTEEN_BIT_ENCODINGS:
        # x * 257 spreads 0..255 over 0..65535, and (x * 257) >> 8 == x reads it back exactly.
        eight_bit = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if encoding == "mono16" else _mosaic(rgb, _BAYER_TILES[encoding])
        return (eight_bit.astype(np.uint16) * 257).astype(np.dtype(">u2" if is_bigendian else "<u2")).view(np.uint8)
    if encoding in ("yuv422", "uyvy"):
        return _rgb_to_yuv422(rgb, cv2.COLOR_RGB2YUV_UYVY)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return _rgb_to_yuv422(rgb, cv2.COLOR_RGB2YUV_YUYV)
    return _mosaic(rgb, _BAYER_TILES[encoding])


def _rgb_to_yuv422(rgb: np.ndarray, code: int) -> np.ndarray:
    if rgb.shape[1] % 2:
        raise ValueError(f"4:2:2 YUV needs an even width, got {rgb.shape[1]}")
    return cv2.cvtColor(rgb, code)


def _mosaic(rgb: np.ndarray, tile: str) -> np.ndarray:
    """Sample one colour per pixel following the 2x2 ``tile`` (e.g. "RGGB", ROS order)."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for index, colour in enumerate(tile):
        row, col = divmod(index, 2)
        mosaic[row::2, col::2] = rgb[row::2, col::2, "RGB".index(colour)]
    return mosaic


def _data_as_uint8(data) -> np.ndarray:
    """The message's data field as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"image data must be uint8, got a {data.dtype} array")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        raise ImageConversionError(f"image data of type {type(data).__name__} is not a byte buffer") from None


def _describe_array(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
