"""File-mode channels: pairing by base name, skipping junk, and failing early on bad masks."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import save_image, save_mask
from PIL import Image

from semseg import paths
from semseg.data import file_mode, images, loaders
from semseg.errors import UserError
from semseg.sample_data import write_opt_ml_tree


def test_pairs_by_base_name_and_skips_junk_and_unmatched(split_dirs, caplog):
    image_dir, mask_dir = split_dirs
    for name in ("a", "b", "c"):
        save_image(image_dir / f"{name}.jpg", 20, 10)
    save_image(image_dir / "d.png", 20, 10)
    for name in ("a", "b", "d", "e"):
        save_mask(mask_dir / f"{name}.png", np.zeros((10, 20)))
    (image_dir / "train_annotation").mkdir()  # an S3 prefix collision, as the built-in's log shows
    (image_dir / "notes.txt").write_text("not an image")
    pairs = file_mode.find_pairs(image_dir, mask_dir)
    assert [p.image.name for p in pairs] == ["a.jpg", "b.jpg", "d.png"]
    assert f"{image_dir / 'train_annotation'} is not a readable image file" in caplog.text
    assert "1 images in" in caplog.text and "1 masks in" in caplog.text


def test_no_pairs_is_a_clear_error(split_dirs):
    image_dir, mask_dir = split_dirs
    save_image(image_dir / "a.jpg", 8, 8)
    save_mask(mask_dir / "b.png", np.zeros((8, 8)))
    with pytest.raises(UserError, match="No image/mask pairs found"):
        file_mode.find_pairs(image_dir, mask_dir)


def test_missing_channel_directory(tmp_path):
    with pytest.raises(UserError, match="The 'train_annotation' channel is missing"):
        file_mode.find_pairs(tmp_path, tmp_path / "train_annotation")


def test_mask_of_another_size_fails_naming_both_files(split_dirs):
    image_dir, mask_dir = split_dirs
    save_image(image_dir / "a.jpg", 20, 10)
    save_mask(mask_dir / "a.png", np.zeros((10, 21)))
    pairs = file_mode.find_pairs(image_dir, mask_dir)
    with pytest.raises(UserError, match=r"a.png is 21x10 but its image .*a.jpg is 20x10"):
        file_mode.check_pairs(pairs, {"scale": 1}, 3, "train")


def test_rgb_mask_fails_with_what_masks_must_be(split_dirs):
    image_dir, mask_dir = split_dirs
    save_image(image_dir / "a.jpg", 8, 8)
    save_image(mask_dir / "a.png", 8, 8)
    pairs = file_mode.find_pairs(image_dir, mask_dir)
    with pytest.raises(UserError, match="single-channel 8-bit PNGs"):
        file_mode.check_pairs(pairs, {"scale": 1}, 3, "train")


def test_exif_rotated_image_pairs_with_an_upright_mask(split_dirs):
    image_dir, mask_dir = split_dirs
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 20x10, shown 10x20
    Image.new("RGB", (20, 10), (10, 200, 10)).save(image_dir / "a.jpg", exif=exif)
    save_mask(mask_dir / "a.png", np.zeros((20, 10)))
    pairs = file_mode.find_pairs(image_dir, mask_dir)
    file_mode.check_pairs(pairs, {"scale": 1}, 3, "train")
    assert images.read_rgb(pairs[0].image).shape == (20, 10, 3)


def test_values_outside_the_classes_are_counted_in_one_warning(split_dirs, caplog):
    image_dir, mask_dir = split_dirs
    for name in ("a", "b"):
        save_image(image_dir / f"{name}.jpg", 4, 2)
    save_mask(mask_dir / "a.png", np.array([[0, 1, 2, 7], [255, 255, 1, 1]]), mode="L")
    save_mask(mask_dir / "b.png", np.array([[9, 0, 0, 0], [0, 0, 0, 0]]))
    counts = file_mode.check_pairs(file_mode.find_pairs(image_dir, mask_dir), {"scale": 1}, 3, "train")
    assert counts.tolist() == [8, 3, 1]
    warnings = [r for r in caplog.records if "map to no class" in r.getMessage()]
    assert len(warnings) == 1 and "values: 7, 9" in warnings[0].getMessage()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_images_of_any_mode_decode_to_rgb(tmp_path, mode):
    path = tmp_path / "x.png"
    if mode == "I;16":
        Image.fromarray(np.full((5, 7), 1000, dtype=np.uint16)).save(path)
    else:
        save_image(path, 7, 5, mode=mode)
    rgb = images.read_rgb(path)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8


def test_pillow_limits_are_set_at_import_and_left_alone_while_decoding(tmp_path, monkeypatch):
    """Images are opened in threads: a global changed around each open would leak between them."""
    from PIL import ImageFile

    path = save_image(tmp_path / "a.png", 20, 10)
    assert Image.MAX_IMAGE_PIXELS is None and ImageFile.LOAD_TRUNCATED_IMAGES is False
    seen_while_opening = []
    real_open = Image.open

    def watching_open(*args, **kwargs):
        seen_while_opening.append((Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", watching_open)
    assert images.read_rgb(path).shape == (10, 20, 3)
    assert images.read_mask(save_mask(tmp_path / "a_mask.png", np.zeros((10, 20)))).shape == (10, 20)
    assert seen_while_opening == [(None, False), (None, False)]
    assert Image.MAX_IMAGE_PIXELS is None and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_no_module_that_imports_gluoncv_leaves_truncated_images_on():
    """Importing GluonCV turns LOAD_TRUNCATED_IMAGES on; each of our modules that imports it turns it off."""
    check = (
        "import semseg.data.images, semseg.train.loop, semseg.inference.predictor; from PIL import ImageFile; "
        "print(ImageFile.LOAD_TRUNCATED_IMAGES)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_an_image_over_the_callers_limit_is_refused_from_its_header(tmp_path):
    with pytest.raises(images.ImageTooLarge, match="20x10 pixels, more than the limit of 199 pixels"):
        images.open_image(save_image(tmp_path / "a.png", 20, 10), max_pixels=199)


@pytest.mark.parametrize("given", ["test", "test_annotation"])
def test_a_test_channel_without_its_other_half_is_refused_before_training(tmp_path, monkeypatch, given):
    """Found at the start: at the end of training the held-out figure would only be missing."""
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(write_opt_ml_tree(tmp_path, train=2, validation=1)))
    paths.channel_dir(given).mkdir()
    missing = "test_annotation" if given == "test" else "test"
    with pytest.raises(UserError) as error:
        loaders.data_splits({}, {}, 0)
    assert str(error.value) == (
        f"The '{given}' channel is given without the '{missing}' channel; a held-out test set needs both"
    )
