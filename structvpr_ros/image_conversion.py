"""sensor_msgs/Image and sensor_msgs/CompressedImage -> RGB uint8 (H, W, 3) numpy array.

Our own replacement for cv_bridge (whose PyPI port is broken here). Works on anything
with the message fields (duck typing): rclpy messages (``data`` is ``array.array`` or
``bytes``) and rosbags dataclasses (``data`` is a uint8 numpy array).

Bad input raises ``ImageConversionError`` (a ``ValueError``) naming the problem, so the
node can count and skip the frame; a wrong picture is never returned silently.

The inverse, ``rgb_to_image_fields``, builds Image fields from an RGB array for tests
and the bag writer.
"""

from __future__ import annotations

import cv2
import numpy as np


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
}
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)
_DEPTH_ENCODINGS = ("16UC1", "32FC1")
# Whole-pixel layouts that can be resized before their colour conversion (not Bayer / 4:2:2).
_RESIZABLE_ENCODINGS = ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "mono8", "8UC1", "mono16")
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT C4 / JPG C8 / DAC CC.
_JPEG_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_YUV422_ENCODINGS = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")

# Position of R, G, B in the 2x2 Bayer tile, in ROS order (row-major: (0,0) (0,1) (1,0) (1,1)).
_BAYER_TILES = {
    "bayer_rggb8": "RGGB",
    "bayer_bggr8": "BGGR",
    "bayer_gbrg8": "GBRG",
    "bayer_grbg8": "GRBG",
}


def message_to_rgb(msg, shrink_to: tuple[int, int] | None = None) -> np.ndarray:
    """Image or CompressedImage (told apart by the ``format`` field) -> RGB uint8 (H, W, 3).

    ``shrink_to`` (W, H): the caller needs no more pixels than this (a network input), so
    work at reduced size: a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg while it
    stays at least that big, and 8-bit colour / mono images are resized to exactly that
    size before their colour conversion. None: full resolution (ORB features need it).
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, shrink_to)
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg, shrink_to)
    raise ImageConversionError(
        f"{type(msg).__name__} is neither a sensor_msgs/Image nor a sensor_msgs/CompressedImage"
    )


def image_to_rgb(msg, shrink_to: tuple[int, int] | None = None) -> np.ndarray:
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
    if encoding == "mono16":
        byte_order = ">" if msg.is_bigendian else "<"
        mono16 = pixels.view(np.dtype(f"{byte_order}u2"))[:, :, 0]
        pixels = (mono16 >> 8).astype(np.uint8)
    elif bytes_per_pixel == 1:
        pixels = pixels[:, :, 0]
    if shrink_to is not None and encoding in _RESIZABLE_ENCODINGS and width * height > shrink_to[0] * shrink_to[1]:
        # shrink first: the colour conversion then touches the small image only
        pixels = cv2.resize(np.ascontiguousarray(pixels), tuple(shrink_to), interpolation=cv2.INTER_AREA)
    if to_rgb is None:
        return pixels.copy()  # never hand out a view of the message buffer
    return cv2.cvtColor(np.ascontiguousarray(pixels), to_rgb)


def compressed_to_rgb(msg, shrink_to: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG, image_transport style format) -> RGB uint8 (H, W, 3).

    ``format`` is "jpeg", "png" or image_transport's "<encoding>; <codec> compressed
    <compressed encoding>". The codec itself is recognised from the bytes; the format
    string decides the channel order (image_transport stores colour as bgr8).
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"CompressedImage format {fmt!r} is a depth image, not a camera image")
    data = _data_as_uint8(msg.data)
    if data.size == 0:
        raise ImageConversionError(f"CompressedImage (format {fmt!r}) has no data")
    bgr = cv2.imdecode(data, _reduced_decode_flag(data, shrink_to))
    if bgr is None:
        raise ImageConversionError(
            f"CompressedImage (format {fmt!r}, {data.size} bytes) could not be decoded: corrupt or not JPEG/PNG"
        )
    # A producer that compressed an rgb8 buffer as is says so after "compressed"; the
    # decoder then hands back RGB where it thinks it returns BGR.
    compressed_encoding = fmt.partition("compressed")[2].strip()
    if compressed_encoding == "rgb8":
        return bgr
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _reduced_decode_flag(data: np.ndarray, shrink_to: tuple[int, int] | None) -> int:
    """IMREAD_REDUCED_COLOR_{8,4,2}: the largest JPEG DCT scaling that stays >= ``shrink_to``."""
    size = _jpeg_size(data) if shrink_to is not None else None
    if size is not None:
        for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if -(-size[0] // factor) >= shrink_to[0] and -(-size[1] // factor) >= shrink_to[1]:
                return flag
    return cv2.IMREAD_COLOR


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header; None if not a well-formed JPEG header."""
    head = data[:65536].tobytes()  # SOF comes after the APP/DQT/DHT segments, well within this
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            height, width = int.from_bytes(head[i + 5 : i + 7], "big"), int.from_bytes(head[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        i += 2 + length
    return None


def rgb_to_image_fields(
    rgb: np.ndarray, encoding: str, *, is_bigendian: bool = False, row_padding: int = 0
) -> dict:
    """RGB uint8 (H, W, 3) -> sensor_msgs/Image fields {height, width, encoding, is_bigendian, step, data}.

    ``data`` is ``bytes`` (assign it to an rclpy message as is; wrap it with
    ``np.frombuffer`` for rosbags). ``row_padding`` appends that many zero bytes to each
    row, as drivers with aligned rows do. ``is_bigendian`` matters for mono16 only.
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
        "is_bigendian": bool(is_bigendian) and encoding == "mono16",
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
    if encoding == "mono16":
        # x * 257 spreads 0..255 over 0..65535, and (x * 257) >> 8 == x reads it back exactly.
        mono16 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        return mono16.astype(np.dtype(">u2" if is_bigendian else "<u2")).view(np.uint8)
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
