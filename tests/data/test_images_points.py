from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from instlib.data.images import read_image, to_rgb, to_uint8, write_image
from instlib.data.points import read_points, write_points
from instlib.errors import DataError


def test_every_format_reads_into_one_convention(tmp_path: Path):
    gray8 = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    Image.fromarray(gray8).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g16.tif", gray8.astype(np.uint16) * 257)
    rgba = np.dstack([gray8, gray8, gray8, np.full_like(gray8, 7)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "chw.tiff", np.stack([gray8] * 3), photometric="minisblack")  # channel-first
    expected = gray8.astype(np.float32) / 255
    for name, channels in [("g.png", 1), ("g16.tif", 1), ("rgba.png", 3), ("chw.tiff", 3)]:
        img = read_image(tmp_path / name)
        assert img.dtype == np.float32 and img.shape == (3, 4, channels), name
        np.testing.assert_allclose(img[..., 0], expected, atol=1e-6, err_msg=name)


def test_jpeg_round_trip_is_close(tmp_path: Path):
    rgb = np.random.default_rng(0).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    rgb = np.repeat(np.repeat(rgb[::8, ::8], 8, 0), 8, 1)  # smooth blocks survive JPEG
    write_image(tmp_path / "a.jpg", rgb)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == rgb.shape and np.abs(back - rgb).mean() < 0.03


def test_truncated_and_garbage_images_name_the_file(tmp_path: Path):
    write_image(tmp_path / "ok.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    for bad in ("cut.png", "junk.tif"):
        with pytest.raises(DataError, match="cannot be decoded") as err:
            read_image(tmp_path / bad)
        assert err.value.path == tmp_path / bad


def test_uint8_and_rgb_helpers():
    img = np.array([[[0.0], [0.5], [1.0]]], dtype=np.float32)
    assert to_uint8(img).ravel().tolist() == [0, 128, 255]
    assert to_rgb(img).shape == (1, 3, 3)


def test_points_round_trip_exactly(tmp_path: Path):
    pts = np.array([[0.0, 0.0], [10.25, 3.0], [1 / 3, 2 / 3]])
    write_points(tmp_path / "p.csv", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "p.csv"), pts)


def test_header_only_csv_means_zero_cells(tmp_path: Path):
    (tmp_path / "p.csv").write_text("X,Y\n")
    assert read_points(tmp_path / "p.csv").shape == (0, 2)


@pytest.mark.parametrize("text, problem", [
    ("A,B\n1,2\n", "expected columns 'X' and 'Y'"),
    ("X,Y\n1,2\nfoo,3\n", "line 3: non-numeric"),
    ("X,Y\n1,nan\n", "line 2: coordinate is NaN"),
    ("", "is empty"),
])
def test_bad_csvs_get_clear_errors(tmp_path: Path, text, problem):
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_points(tmp_path / "p.csv")
    assert str(tmp_path / "p.csv") in str(err.value)


def test_points_outside_the_image_are_refused(tmp_path: Path):
    write_points(tmp_path / "p.csv", np.array([[5, 5], [40, 2], [3, 30]]))
    with pytest.raises(DataError, match="2 of 3 points lie outside the 20x30 image"):
        read_points(tmp_path / "p.csv", shape=(20, 30))
    assert len(read_points(tmp_path / "p.csv", shape=(31, 41))) == 3
