"""structvpr_ros.image_conversion against rosbags-image (the oracle) on real CamVid frames.

Every message is built the way the node receives it: an rclpy message serialized to CDR,
then deserialized by rclpy (data = array.array) and by rosbags (data = numpy array).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from structvpr_core.paths import shared_dir
from structvpr_ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_image_size,
    compressed_to_rgb,
    image_to_rgb,
    message_to_rgb,
    rgb_to_image_fields,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
CAMVID_IMAGES = shared_dir() / "data" / "camvid_sample" / "images"

# 8UC1 / 8UC3 are read like cv_bridge does (mono8 / bgr8); rosbags-image would leave
# 8UC3 unswapped, so the oracle gets the same bytes under the explicit name.
ORACLE_ENCODING = {"8UC1": "mono8", "8UC3": "bgr8"}
# Mean absolute error of (encode -> convert) against the source RGB for the encodings
# that keep colour: exact ones give 0, 4:2:2 shares chroma between pixel pairs.
ROUND_TRIP_MEAN_ERROR = {"rgb8": 0.0, "bgr8": 0.0, "8UC3": 0.0, "rgba8": 0.0, "bgra8": 0.0,
                         "yuv422": 1.0, "uyvy": 1.0, "yuv422_yuy2": 1.0, "yuyv": 1.0}  # fmt: skip
BAYER_TILES = {f"bayer_{tile.lower()}{bits}": tile for tile in ("RGGB", "BGGR", "GBRG", "GRBG") for bits in (8, 16)}
# 16-bit: rosbags-image demosaics at full depth and scales by 255/65535 where we keep the
# high byte (>> 8): at most one level apart, like mono16
LOSSY = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv", *BAYER_TILES)


@pytest.fixture(scope="module")
def camvid_rgb() -> list[np.ndarray]:
    paths = sorted(CAMVID_IMAGES.glob("*.png"))
    assert paths, f"no CamVid frames in {CAMVID_IMAGES}: set STRUCTVPR_SHARED to the shared data folder"
    # Two different sequences (0001TP, Seq05VD); 480x360 each.
    chosen = [paths[0], paths[-1]]
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in chosen]


def _received_messages(fields: dict):
    """(rclpy message, rosbags message) as a subscriber / bag reader would get them."""
    sent = Image(**fields)
    sent.header.frame_id = "camera"
    cdr = serialize_message(sent)
    return deserialize_message(cdr, Image), TYPESTORE.deserialize_cdr(bytes(cdr), "sensor_msgs/msg/Image")


def _received_compressed(data: bytes, fmt: str):
    sent = CompressedImage(format=fmt, data=data)
    cdr = serialize_message(sent)
    return (
        deserialize_message(cdr, CompressedImage),
        TYPESTORE.deserialize_cdr(bytes(cdr), "sensor_msgs/msg/CompressedImage"),
    )


def _oracle_rgb(fields: dict) -> np.ndarray:
    """rosbags-image's rgb8 conversion of the same pixels (it ignores `step`, so no padding)."""
    fields = dict(fields, encoding=ORACLE_ENCODING.get(fields["encoding"], fields["encoding"]))
    return message_to_cvimage(_received_messages(fields)[1], "rgb8")


def _assert_rgb_array(image: np.ndarray, height: int, width: int):
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    assert image.flags.c_contiguous and image.flags.writeable


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_matches_rosbags_image(camvid_rgb, encoding):
    for rgb in camvid_rgb:
        fields = rgb_to_image_fields(rgb, encoding)
        rclpy_msg, rosbags_msg = _received_messages(fields)
        assert isinstance(rosbags_msg.data, np.ndarray)

        ours = image_to_rgb(rclpy_msg)
        _assert_rgb_array(ours, *rgb.shape[:2])
        np.testing.assert_array_equal(image_to_rgb(rosbags_msg), ours)

        oracle = _oracle_rgb(fields)
        difference = np.abs(ours.astype(np.int16) - oracle)
        assert difference.max() <= (1 if encoding in LOSSY else 0), encoding

        if encoding in BAYER_TILES:
            _assert_measured_bayer_sites_kept(ours, rgb, BAYER_TILES[encoding])
        elif encoding in ROUND_TRIP_MEAN_ERROR:
            assert np.abs(ours.astype(np.int16) - rgb).mean() <= ROUND_TRIP_MEAN_ERROR[encoding], encoding
        else:  # mono: the luma OpenCV computes, in all three channels
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            np.testing.assert_array_equal(ours, np.repeat(grey[:, :, None], 3, axis=2))


def _assert_measured_bayer_sites_kept(demosaiced: np.ndarray, rgb: np.ndarray, tile: str):
    """Demosaicing keeps each pixel's measured colour; only a correct pattern phase does so.

    (Read with a wrong phase, at most ~62% of these values survive on CamVid frames.)
    """
    measured = np.zeros(rgb.shape, bool)
    for index, colour in enumerate(tile):
        row, col = divmod(index, 2)
        measured[row::2, col::2, "RGB".index(colour)] = True
    # OpenCV fills the 1-pixel image border from the neighbouring row/column.
    measured[[0, -1], :, :] = False
    measured[:, [0, -1], :] = False
    np.testing.assert_array_equal(demosaiced[measured], rgb[measured])


def test_8uc3_is_read_as_bgr_like_cv_bridge(camvid_rgb):
    rgb = camvid_rgb[0]
    bgr_bytes = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).tobytes()
    fields = rgb_to_image_fields(rgb, "8UC3")
    assert fields["data"] == bgr_bytes
    np.testing.assert_array_equal(image_to_rgb(_received_messages(fields)[0]), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "mono16", "uyvy", "yuyv", "bayer_grbg8",
                                      "bayer_gbrg16"])
def test_padded_rows_are_skipped(camvid_rgb, encoding):
    rgb = camvid_rgb[1]
    padding = 7  # odd on purpose: mono16 rows then start at unaligned addresses
    fields = rgb_to_image_fields(rgb, encoding, row_padding=padding)
    unpadded = rgb_to_image_fields(rgb, encoding)
    assert fields["step"] == unpadded["step"] + padding
    # Fill the padding with 0xFF so reading it would show.
    rows = np.frombuffer(fields["data"], np.uint8).reshape(rgb.shape[0], fields["step"]).copy()
    rows[:, unpadded["step"] :] = 255
    padded = dict(fields, data=rows.tobytes())

    for msg in _received_messages(padded):
        np.testing.assert_array_equal(image_to_rgb(msg), image_to_rgb(_received_messages(unpadded)[0]))
    expected = _oracle_rgb(unpadded)
    assert np.abs(image_to_rgb(_received_messages(padded)[1]).astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize("is_bigendian", [False, True])
def test_mono16_keeps_the_high_byte_in_both_byte_orders(camvid_rgb, is_bigendian):
    # Real grey values in the high byte, arbitrary values in the low byte.
    grey = cv2.cvtColor(camvid_rgb[0], cv2.COLOR_RGB2GRAY)
    low = np.random.default_rng(0).integers(0, 256, grey.shape, dtype=np.uint16)
    mono16 = (grey.astype(np.uint16) << 8) | low
    height, width = mono16.shape
    fields = {
        "height": height,
        "width": width,
        "encoding": "mono16",
        "is_bigendian": is_bigendian,
        "step": width * 2,
        "data": mono16.astype(">u2" if is_bigendian else "<u2").tobytes(),
    }
    for msg in _received_messages(fields):
        np.testing.assert_array_equal(image_to_rgb(msg)[:, :, 1], grey)
    # rosbags-image scales by 255/65535 instead of >> 8: at most one level apart.
    assert np.abs(image_to_rgb(_received_messages(fields)[0]).astype(np.int16) - _oracle_rgb(fields)).max() <= 1
    # Reading the bytes in the wrong order gives a different picture: the flag is honoured.
    wrong = dict(fields, is_bigendian=not is_bigendian)
    assert not np.array_equal(image_to_rgb(_received_messages(wrong)[0])[:, :, 1], grey)


@pytest.mark.parametrize("is_bigendian", [False, True])
def test_bayer16_is_demosaiced_at_full_depth_in_both_byte_orders(camvid_rgb, is_bigendian):
    # a 12-bit sensor's values in the high bits, noise in the low bits: rosbags-image agrees
    # within one level, and the measured sites keep their high byte
    rgb = camvid_rgb[1]
    mosaic8 = np.frombuffer(rgb_to_image_fields(rgb, "bayer_rggb8")["data"], np.uint8).reshape(rgb.shape[:2])
    low = np.random.default_rng(1).integers(0, 256, mosaic8.shape, dtype=np.uint16)
    mosaic16 = (mosaic8.astype(np.uint16) << 8) | low
    fields = {"height": rgb.shape[0], "width": rgb.shape[1], "encoding": "bayer_rggb16",
              "is_bigendian": is_bigendian, "step": rgb.shape[1] * 2,
              "data": mosaic16.astype(">u2" if is_bigendian else "<u2").tobytes()}
    ours = image_to_rgb(_received_messages(fields)[0])
    np.testing.assert_array_equal(ours, image_to_rgb(_received_messages(fields)[1]))
    assert np.abs(ours.astype(np.int16) - _oracle_rgb(fields)).max() <= 1
    wrong = dict(fields, is_bigendian=not is_bigendian)
    assert np.abs(image_to_rgb(_received_messages(wrong)[0]).astype(np.int16) - ours).mean() > 10


def test_rgb8_result_does_not_alias_the_message(camvid_rgb):
    msg = _received_messages(rgb_to_image_fields(camvid_rgb[0], "rgb8"))[1]
    before = msg.data.copy()
    image_to_rgb(msg)[:] = 0
    np.testing.assert_array_equal(msg.data, before)


def _image_fields(**overrides) -> dict:
    fields = {"height": 4, "width": 6, "encoding": "rgb8", "is_bigendian": False, "step": 18, "data": bytes(72)}
    return dict(fields, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 0, "step": 0, "data": b""}, r"zero size \(0x4\)"),
        ({"height": 0, "data": b""}, r"zero size \(6x0\)"),
        ({"step": 17}, r"step 17 is smaller than width\*bytes_per_pixel = 6\*3"),
        ({"data": bytes(71)}, r"needs 72 bytes of data, got 71"),
        ({"data": bytes(90)}, r"needs 72 bytes of data, got 90"),
        ({"encoding": "uyvy", "width": 5, "step": 10, "data": bytes(40)}, r"odd width 5"),
        ({"encoding": "nv12"}, r"unsupported image encoding 'nv12' \(supported: rgb8, bgr8"),
        ({"encoding": "rgb16"}, r"unsupported image encoding 'rgb16'"),
        ({"encoding": "bayer_rggb8", "height": 2, "width": 8, "step": 8, "data": bytes(16)}, r"too small to demosaic"),
    ],
)
def test_invalid_images_are_rejected_with_the_reason(overrides, message):
    for msg in _received_messages(_image_fields(**overrides)):
        with pytest.raises(ImageConversionError, match=message):
            image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_images_are_rejected(encoding):
    fields = _image_fields(encoding=encoding, step=24, data=bytes(96))
    with pytest.raises(ImageConversionError, match="depth image, not a camera image"):
        image_to_rgb(Image(**fields))
    with pytest.raises(ValueError):  # the node may catch plain ValueError
        message_to_rgb(_received_messages(fields)[1])


def test_data_that_is_not_bytes_is_rejected():
    class FakeImage:  # duck-typed message with float data, as a buggy producer might send
        height, width, encoding, is_bigendian, step = 1, 2, "mono8", False, 2
        data = np.zeros(2, np.float32)

    with pytest.raises(ImageConversionError, match="must be uint8, got a float32 array"):
        image_to_rgb(FakeImage())
    FakeImage.data = [0, 1]
    with pytest.raises(ImageConversionError, match="data of type list is not a byte buffer"):
        image_to_rgb(FakeImage())
    with pytest.raises(ImageConversionError, match="neither a sensor_msgs/Image nor"):
        message_to_rgb(object())


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "mono8; png compressed "])
def test_png_compressed_image_is_lossless(camvid_rgb, fmt):
    rgb = camvid_rgb[0]
    if fmt.startswith("mono8"):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        png, expected = cv2.imencode(".png", grey)[1].tobytes(), cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    else:
        png, expected = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes(), rgb
    for msg in _received_compressed(png, fmt):
        ours = message_to_rgb(msg)
        _assert_rgb_array(ours, *rgb.shape[:2])
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_jpeg_compressed_image_matches_rosbags_image(camvid_rgb, fmt):
    rgb = camvid_rgb[1]
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rclpy_msg, rosbags_msg = _received_compressed(jpeg, fmt)
    ours = compressed_to_rgb(rclpy_msg)
    np.testing.assert_array_equal(compressed_to_rgb(rosbags_msg), ours)
    np.testing.assert_array_equal(ours, message_to_cvimage(rosbags_msg, "rgb8"))
    assert np.abs(ours.astype(np.int16) - rgb).mean() < 3.0  # JPEG q90 on a street scene


def test_jpeg_of_an_rgb_buffer_keeps_its_channel_order(camvid_rgb):
    rgb = camvid_rgb[0]
    # A producer that compressed the rgb8 buffer as is (no BGR conversion) says so.
    png_of_rgb_buffer = cv2.imencode(".png", rgb)[1].tobytes()
    ours = compressed_to_rgb(_received_compressed(png_of_rgb_buffer, "rgb8; png compressed rgb8")[0])
    np.testing.assert_array_equal(ours, rgb)


def _damage(jpeg: bytes, how: str) -> bytes:
    if how == "truncated":
        return jpeg[: len(jpeg) // 2]
    if how == "zeroed block":
        return jpeg[:600] + bytes(1400) + jpeg[2000:]
    return b"this is not a jpeg" * 50


@pytest.mark.parametrize("how", ["truncated", "zeroed block", "not an image"])
def test_corrupt_jpeg_is_rejected(camvid_rgb, how):
    jpeg = cv2.imencode(".jpg", camvid_rgb[0])[1].tobytes()
    for msg in _received_compressed(_damage(jpeg, how), "rgb8; jpeg compressed bgr8"):
        with pytest.raises(ImageConversionError, match=r"could not be decoded: corrupt or not JPEG/PNG"):
            compressed_to_rgb(msg)


def test_empty_and_depth_compressed_images_are_rejected(camvid_rgb):
    with pytest.raises(ImageConversionError, match="has no data"):
        compressed_to_rgb(_received_compressed(b"", "jpeg")[1])
    png = cv2.imencode(".png", camvid_rgb[0])[1].tobytes()
    with pytest.raises(ImageConversionError, match="depth image, not a camera image"):
        compressed_to_rgb(_received_compressed(png, "16UC1; compressedDepth png")[0])


def test_rgb_to_image_fields_rejects_bad_input(camvid_rgb):
    with pytest.raises(ValueError, match=r"expected an RGB uint8 \(H, W, 3\) array, got float32 array of shape"):
        rgb_to_image_fields(camvid_rgb[0].astype(np.float32), "rgb8")
    with pytest.raises(ValueError, match="cannot produce encoding '16UC1'"):
        rgb_to_image_fields(camvid_rgb[0], "16UC1")
    with pytest.raises(ValueError, match="4:2:2 YUV needs an even width, got 479"):
        rgb_to_image_fields(camvid_rgb[0][:, :479], "yuyv")


def _huge_png(width: int, height: int) -> bytes:
    """A real grey PNG of width x height black pixels, compressed row by row (never held decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    squeeze, idat, row = zlib.compressobj(9), [], bytes(1 + width)  # filter byte 0 + pixels
    for _ in range(height):
        idat.append(squeeze.compress(row))
    idat.append(squeeze.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


def test_a_small_png_of_a_huge_image_is_refused_from_its_header():
    png = _huge_png(8000, 8000)  # 64 MP: 192 MB once decoded to RGB
    assert len(png) < 200_000
    assert compressed_image_size(png) == (8000, 8000)
    for msg in _received_compressed(png, "png"):
        with pytest.raises(ImageConversionError, match=r"8000x8000 = 64000000 pixels, more than max_pixels = 40000000"):
            compressed_to_rgb(msg, max_pixels=40_000_000)


def test_compressed_size_is_read_from_real_jpeg_and_png_headers(camvid_rgb):
    rgb = camvid_rgb[0]
    h, w = rgb.shape[:2]
    for ext, params in ((".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        data = cv2.imencode(ext, rgb, params)[1].tobytes()
        assert compressed_image_size(data) == (w, h), ext
        msg = _received_compressed(data, "jpeg")[0]
        assert compressed_to_rgb(msg, max_pixels=w * h).shape == (h, w, 3)  # exactly at the limit: accepted
        with pytest.raises(ImageConversionError, match=f"{w}x{h} = {w * h} pixels, more than max_pixels"):
            compressed_to_rgb(msg, max_pixels=w * h - 1)
    raw = _received_messages(rgb_to_image_fields(rgb, "rgb8"))[0]
    with pytest.raises(ImageConversionError, match="more than max_pixels"):
        image_to_rgb(raw, max_pixels=1000)


@pytest.mark.parametrize("how", ["bit flip", "zeroed bytes", "truncated"])
def test_a_png_damaged_anywhere_is_rejected(camvid_rgb, how):
    # PNG carries a CRC per chunk: damage is detected (JPEG has no checksum: see the module docstring)
    png = bytearray(cv2.imencode(".png", camvid_rgb[0])[1].tobytes())
    middle = len(png) // 2
    if how == "bit flip":
        png[middle] ^= 0x10
    elif how == "zeroed bytes":
        png[middle:middle + 64] = bytes(64)
    else:
        png = png[:middle]
    for msg in _received_compressed(bytes(png), "png"):
        with pytest.raises(ImageConversionError, match="could not be decoded: corrupt or not JPEG/PNG"):
            compressed_to_rgb(msg)
