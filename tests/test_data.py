import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import smooth_image, write_images
from spikeir.data import (
    DenoisePatchSampler,
    ImageReadError,
    add_test_noise,
    builtin_images,
    list_images,
    load_image_set,
    read_image,
    to_tensor,
    to_uint8,
    write_image_atomic,
)


def test_list_images_recursive_sorted(tmp_path):
    write_images(tmp_path / "b", 2)
    write_images(tmp_path / "a" / "deep", 1)
    (tmp_path / "notes.txt").write_text("x")
    files = list_images(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/deep/img00.png", "b/img00.png", "b/img01.png"]


def test_empty_and_missing_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def test_unreadable_files_are_skipped_with_warning(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "fake.jpg").write_text("this is not a jpeg")
    good = tmp_path / "img00.png"
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.warns(UserWarning) as rec:
        imgs = load_image_set(tmp_path, gray=True)
    msgs = " ".join(str(w.message) for w in rec)
    for name in ("zero.png", "fake.jpg", "trunc.png"):
        assert name in msgs
    assert [n for n, _ in imgs] == ["img00.png", "img01.png"]


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        load_image_set(tmp_path)


def test_read_image_modes(tmp_path):
    rgb = smooth_image(0, rgb=True)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").shape == rgb.shape
    g = read_image(tmp_path / "c.png", gray=True)
    assert g.shape == rgb.shape[:2] and g.dtype == np.uint8
    gray = smooth_image(1)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png", gray=False).shape == gray.shape + (3,)
    sixteen = (gray.astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    assert np.abs(read_image(tmp_path / "g16.png").astype(int) - gray).max() <= 1
    with pytest.raises(ImageReadError, match="g.txt"):
        (tmp_path / "g.txt").write_text("x")
        read_image(tmp_path / "g.txt")


def test_atomic_write_refuses_overwrite(tmp_path):
    p = tmp_path / "o.png"
    write_image_atomic(p, smooth_image(0))
    before = p.read_bytes()
    with pytest.raises(FileExistsError):
        write_image_atomic(p, smooth_image(1))
    assert p.read_bytes() == before
    write_image_atomic(p, smooth_image(1), overwrite=True)
    assert p.read_bytes() != before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.png"]


def test_test_noise_matches_the_papers_protocol():
    clean = smooth_image(3)
    np.random.seed(0)
    expected = clean / 255.0 + np.random.normal(0, 25 / 255.0, clean.shape)
    got = add_test_noise(clean, 25)
    assert np.array_equal(got, expected)
    bright = np.full((32, 32), 250, np.uint8)
    assert add_test_noise(bright, 25).max() > 1.0


def test_tensor_roundtrip():
    img = smooth_image(4, rgb=True)
    t = to_tensor(img)
    assert t.shape == (3,) + img.shape[:2]
    assert np.array_equal(to_uint8(t), img)
    assert np.array_equal(to_uint8(torch.full((1, 2, 2), 1.7)), np.full((2, 2), 255, np.uint8))


def test_patch_sampler_deterministic_and_correct_noise():
    imgs = [smooth_image(i, 64, 64) for i in range(3)]
    s = DenoisePatchSampler(imgs, patch=24, batch_size=64, sigma=25, seed=7)
    n1, c1 = s.batch(5)
    n2, c2 = s.batch(5)
    assert torch.equal(n1, n2) and torch.equal(c1, c2)
    assert not torch.equal(s.batch(6)[0], n1)
    assert n1.shape == (64, 1, 24, 24)
    assert abs(float((n1 - c1).std()) - 25 / 255) < 0.003
    blind = DenoisePatchSampler(imgs, patch=24, batch_size=256, sigma=[0, 50], seed=0)
    n, c = blind.batch(0)
    stds = (n - c).flatten(1).std(1) * 255
    assert stds.min() < 10 and stds.max() > 40
    with pytest.raises(ValueError, match="larger than"):
        DenoisePatchSampler(imgs, patch=100)


def test_patch_sampler_patches_come_from_images():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every pixel value is unique
    s = DenoisePatchSampler([img], patch=4, batch_size=8, sigma=0, augment=False)
    _, c = s.batch(0)
    for p in c:
        v = (p[0] * 255).round().to(torch.int64).numpy()
        y, x = divmod(int(v[0, 0]), 16)
        assert np.array_equal(v, img[y:y + 4, x:x + 4])


def test_builtin_sets_are_disjoint():
    names = {k: {n for n, _ in builtin_images(k, gray=True)} for k in ("train", "val", "heldout")}
    assert not names["train"] & names["heldout"]
    assert not names["val"] & names["heldout"]
    assert not names["train"] & names["val"]
    assert "camera" in names["heldout"]


def test_float_and_16bit_images(tmp_path):
    g = smooth_image(5)
    Image.fromarray((g / 255.0).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    assert np.abs(read_image(tmp_path / "f.tif").astype(int) - g).max() <= 1
    dark = (g // 16).astype(np.uint16)  # a dark 16-bit image must not be read as 8-bit
    Image.fromarray(dark).save(tmp_path / "d16.png")
    assert read_image(tmp_path / "d16.png").max() <= 1
