from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.data.imagefiles import write_rgb
from transferlab.data import BUILTINS, builtins, load_source
from transferlab.data.builtins import FASHION_CLASSES, find_fashion_mnist
from transferlab.data.sources import from_arrays
from transferlab.data.splitting import held_out_count
from transferlab.errors import ConfigError, DataError


def class_folders(root: Path, per_class: dict[str, int], shade: int = 0) -> Path:
    """One subfolder per class of real PNGs, each of its own colour; another `shade` gives other colours."""
    for k, (name, count) in enumerate(per_class.items()):
        for i in range(count):
            write_rgb(root / name / f"{i:03d}.png", (k * 40, i, shade))
    return root


def names(paths: list[Path] | None) -> list[str]:
    assert paths is not None
    return [p.name for p in paths]


def test_flat_class_folders_give_sorted_classes_and_a_carved_val(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "pets", {"dog": 10, "cat": 5, "bird": 1})
    data = load_source(root)
    assert data.name == "pets"
    assert data.classes == ["bird", "cat", "dog"]
    assert list(data.splits) == ["train", "val"]
    # Classes this small give validation a fifth (its floor of 10 a class is capped there), at least one image
    # of each class that has two or more: bird's only image stays.
    assert data.counts() == {"train": {"bird": 1, "cat": 4, "dog": 8}, "val": {"bird": 0, "cat": 1, "dog": 2}}


def test_image_folder_walk(zoo: tuple[Path, dict[str, Path], dict[Path, str]]) -> None:
    root, good, bad = zoo
    data = load_source(root, val_fraction=0)
    listed = set(data.splits["train"].paths or [])
    # Hidden files and folders and notes.txt are not listed; bad files are (decoding judges them later).
    assert listed == set(good.values()) | set(bad)
    assert good["RGB"].name == "UPPER.JPG"


def test_nested_folders_count_for_their_class(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "d", {"a": 2, "b": 2})
    write_rgb(root / "a" / "2019" / "june" / "deep.png", (9, 9, 9))
    data = load_source(root, val_fraction=0)
    assert data.counts()["train"] == {"a": 3, "b": 2}
    assert "deep.png" in names(data.splits["train"].paths)


def test_split_folders_with_aliases(tmp_path: Path) -> None:
    root = tmp_path / "d"
    class_folders(root / "train", {"a": 4, "b": 4})
    class_folders(root / "Valid", {"a": 2, "b": 1}, shade=1)
    class_folders(root / "test", {"a": 3, "b": 3}, shade=2)
    data = load_source(root)
    assert list(data.splits) == ["train", "val", "test"]
    assert data.counts() == {
        "train": {"a": 4, "b": 4},
        "val": {"a": 2, "b": 1},
        "test": {"a": 3, "b": 3},
    }
    assert data.notes == []  # every file differs


def test_csv_manifest_with_relative_paths_splits_and_extra_columns(tmp_path: Path) -> None:
    for i in range(4):
        write_rgb(tmp_path / "img" / f"{i}.png", (i, 0, 0))
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,label,split,photographer\n"
        "img/0.png,cat,train,ann\n"
        "img/1.png,dog,train,bob\n"
        "img/2.png,cat, Test ,cy\n"  # a split's name in any case, spaces around it
        "img/3.png,dog,validation,dee\n"
    )
    data = load_source(manifest)
    assert data.name == "labels"
    assert data.classes == ["cat", "dog"]
    assert {name: names(split.paths) for name, split in data.splits.items()} == {
        "train": ["0.png", "1.png"],
        "val": ["3.png"],
        "test": ["2.png"],
    }
    assert data.splits["train"].extra == {"photographer": ["ann", "bob"]}
    assert data.splits["train"].paths == [tmp_path / "img" / "0.png", tmp_path / "img" / "1.png"]


def test_csv_naming_missing_files_lists_five_then_counts(tmp_path: Path) -> None:
    rows = "".join(f"missing{i}.png,cat\n" for i in range(7))
    (tmp_path / "m.csv").write_text("path,label\n" + rows)
    with pytest.raises(DataError, match=r"7 files named in .* do not exist: .*missing4\.png and 2 more$"):
        load_source(tmp_path / "m.csv")


def test_csv_without_label_column_names_its_columns(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,category\na.png,cat\n")
    with pytest.raises(DataError, match=r"no 'label' column \(its columns: path, category\)"):
        load_source(tmp_path / "m.csv")


def test_missing_path_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_source(tmp_path / "nowhere")
    message = str(caught.value)
    assert "no such file or folder" in message
    assert all(name in message for name in BUILTINS)
    assert "\n" not in message


def test_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "readme.txt").write_text("no pictures here")
    with pytest.raises(DataError, match=r"no images found in .*empty"):
        load_source(tmp_path / "empty")


def test_single_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"only one class \('cat'\)"):
        load_source(class_folders(tmp_path / "d", {"cat": 3}))


def test_per_class_is_deterministic_by_seed_and_then_val_is_carved(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "d", {"a": 30, "b": 30})
    first, again, other = (load_source(root, per_class=10, seed=s) for s in (1, 1, 2))
    assert first.counts() == {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}}
    assert first.splits["train"].paths == again.splits["train"].paths
    assert first.splits["val"].paths == again.splits["val"].paths
    assert set(first.splits["train"].paths or []) != set(other.splits["train"].paths or [])


def test_one_sample_seed_and_several_seeds_split_the_same_labelled_images_apart(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "d", {"a": 30, "b": 30})
    first, second = (load_source(root, per_class=10, seed=s, sample_seed=7) for s in (1, 2))
    kept = [set(d.splits["train"].paths or []) | set(d.splits["val"].paths or []) for d in (first, second)]
    assert kept[0] == kept[1] and len(kept[0]) == 20  # the same 10 a class
    assert set(first.splits["val"].paths or []) != set(second.splits["val"].paths or [])  # each its own split
    assert kept[0] != set(load_source(root, per_class=10, seed=1).splits["train"].paths or []) | set(
        load_source(root, per_class=10, seed=1).splits["val"].paths or []
    )  # unset, the sample follows the seed


def test_per_class_never_subsamples_test(tmp_path: Path) -> None:
    root = tmp_path / "d"
    class_folders(root / "train", {"a": 20, "b": 20})
    class_folders(root / "test", {"a": 7, "b": 7}, shade=1)
    data = load_source(root, per_class=5, val_fraction=0)
    assert data.counts() == {"train": {"a": 5, "b": 5}, "test": {"a": 7, "b": 7}}


def test_bad_options_are_refused(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="per_class"):
        load_source(root, per_class=0)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_source(root, val_fraction=1.0)


def test_identical_files_across_splits_are_noted(tmp_path: Path) -> None:
    root = tmp_path / "d"
    class_folders(root / "train", {"a": 3, "b": 3})
    class_folders(root / "test", {"a": 3, "b": 3})  # the same colours: byte-identical to train's files
    data = load_source(root, val_fraction=0)
    (note,) = data.notes
    assert note.startswith("6 test images are identical to train images (test/a/000.png = train/a/000.png, ")
    assert note.endswith("and 3 more): test scores will read too high")


def test_arrays_with_string_labels(tmp_path: Path) -> None:
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    data = load_source((images, np.array(["zebra", "ant", "zebra", "ant", "zebra", "ant"])), val_fraction=0)
    assert data.classes == ["ant", "zebra"]
    assert data.splits["train"].labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert data.splits["train"].arrays is not None
    assert data.splits["train"].arrays.shape == (6, 4, 4)


def test_arrays_channels_first_with_class_names() -> None:
    images = np.zeros((4, 3, 5, 6), dtype=np.uint8)
    data = load_source((images, np.array([0, 1, 0, 1]), ["off", "on"]), val_fraction=0)
    assert data.classes == ["off", "on"]
    assert data.splits["train"].arrays is not None
    assert data.splits["train"].arrays.shape == (4, 5, 6, 3)


def _stored(images: np.ndarray) -> np.ndarray:
    """What a Split holds of two in-memory images."""
    arrays = from_arrays(images, np.array([0, 1])).splits["train"].arrays
    assert arrays is not None and arrays.dtype == np.uint8
    return arrays


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 7, 1)])
def test_grey_arrays_are_kept_as_one_grey_channel(shape: tuple[int, ...]) -> None:
    arrays = _stored(np.full(shape, 9, dtype=np.uint8))
    assert arrays.shape == (2, 5, 7) and (arrays == 9).all()


def test_alpha_arrays_composite_onto_white() -> None:
    rgba = np.zeros((2, 2, 2, 4), dtype=np.uint8)
    rgba[:, 0] = (10, 20, 30, 255)
    rgba[:, 1] = (10, 20, 30, 0)
    arrays = _stored(rgba)
    assert arrays.shape == (2, 2, 2, 3)
    assert arrays[:, 0].tolist() == [[[10, 20, 30]] * 2] * 2 and (arrays[:, 1] == 255).all()


def test_float_and_16_bit_arrays_are_scaled() -> None:
    assert _stored(np.array([[[0.0, 1.0]]] * 2))[0, 0].tolist() == [0, 255]
    assert _stored(np.array([[[0, 65535]]] * 2, dtype=np.uint16))[0, 0].tolist() == [0, 255]
    assert _stored(np.array([[[-1.0, 3.0]]] * 2))[0, 0].tolist() == [0, 255]  # no known range: stretched


def test_arrays_of_other_shapes_are_refused() -> None:
    with pytest.raises(DataError, match=r"must be \[N, H, W\]"):
        from_arrays(np.zeros((2, 5, 5, 2), dtype=np.uint8), np.array([0, 1]))


def test_duplicate_arrays_across_splits_are_noted() -> None:
    images = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None], 4, axis=1).repeat(4, axis=2)
    images[5:] = images[:5]  # every image twice
    data = load_source((images, np.array([0, 1, 0, 1, 0] * 2)), val_fraction=0.2, seed=3)
    (note,) = data.notes
    assert note.startswith("2 val images are identical to train images (val[0] = train[")


def test_digits_builtin() -> None:
    data = load_source("digits", val_fraction=0)
    assert data.classes == [str(d) for d in range(10)]
    train, test = data.splits["train"], data.splits["test"]
    assert train.arrays is not None and test.arrays is not None
    assert (len(train), len(test)) == (1347, 450)
    assert train.arrays.shape[1:] == (8, 8)
    assert train.arrays.dtype == np.uint8
    assert train.arrays.max() == 255
    assert np.bincount(test.labels, minlength=10).min() >= 44  # stratified: a quarter of each class


def test_fashion_mnist_sample_ships_with_the_package() -> None:
    data = load_source("fashion-mnist-sample")
    assert data.classes == list(FASHION_CLASSES)
    counts = data.counts()
    assert set(counts["train"].values()) == {180}  # of 200 a class, validation holds a tenth
    assert set(counts["val"].values()) == {20}
    assert set(counts["test"].values()) == {100}
    assert data.splits["test"].arrays is not None
    assert data.splits["test"].arrays.shape == (1000, 28, 28)


FASHION = find_fashion_mnist()


@pytest.mark.skipif(
    FASHION is None,
    reason="no Fashion-MNIST IDX files here: apt-get install dataset-fashion-mnist, or set TRANSFERLAB_DATA",
)
def test_fashion_mnist_from_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert FASHION is not None
    # Through $TRANSFERLAB_DATA, with the files uncompressed: both ways the loader must find them.
    for stem, path in FASHION.items():
        (tmp_path / stem).write_bytes(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
    monkeypatch.setenv("TRANSFERLAB_DATA", str(tmp_path))
    data = load_source("fashion-mnist", per_class=100)
    assert data.classes == list(FASHION_CLASSES)
    assert data.counts()["test"] == dict.fromkeys(FASHION_CLASSES, 1000)
    assert sum(data.counts()["train"].values()) + sum(data.counts()["val"].values()) == 1000
    assert data.splits["test"].arrays is not None
    assert data.splits["test"].arrays.shape == (10000, 28, 28)


def test_builtin_name_wins_over_a_folder_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(class_folders(tmp_path / "x", {"a": 2, "b": 2}), tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    assert load_source("digits").name == "digits"
    assert load_source("./digits").classes == ["a", "b"]


def test_download_keeps_only_files_that_match_their_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A local mirror reached through a file:// address: the same code path as the real download, no network.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    idx = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([7, 8, 9])  # IDX: 1-D, 3 unsigned bytes
    (mirror / "tiny-labels.gz").write_bytes(gzip.compress(idx))
    monkeypatch.setattr(builtins, "FASHION_URL", mirror.as_uri() + "/")
    cache = tmp_path / "cache"

    monkeypatch.setattr(builtins, "FASHION_MD5", {"tiny-labels": "0" * 32})
    with pytest.raises(DataError, match="does not match its published MD5"):
        builtins.download_fashion_mnist(cache)
    assert list(cache.iterdir()) == []  # nothing half-checked is left for the next run to trust

    md5 = hashlib.md5((mirror / "tiny-labels.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(builtins, "FASHION_MD5", {"tiny-labels": md5})
    files = builtins.download_fashion_mnist(cache)
    assert builtins.read_idx(files["tiny-labels"]).tolist() == [7, 8, 9]

    monkeypatch.setattr(builtins, "FASHION_MD5", {"absent": md5})
    with pytest.raises(DataError, match=r"fashion-mnist is not on disk and downloading .*absent\.gz failed"):
        builtins.download_fashion_mnist(cache)


@pytest.mark.parametrize(("size", "held"), [(1, 0), (2, 1), (20, 4), (60, 10), (100, 10), (500, 50)])
def test_validation_holds_a_tenth_at_least_10_and_at_most_a_fifth_of_a_class(size: int, held: int) -> None:
    assert held_out_count(size) == held


def test_the_default_carve_and_a_given_fraction() -> None:
    images = np.zeros((300, 4, 4), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], [200, 60, 40])
    default = load_source((images, labels))
    assert np.bincount(default.splits["val"].labels).tolist() == [20, 10, 8]
    given = load_source((images, labels), val_fraction=0.25)
    assert np.bincount(given.splits["val"].labels).tolist() == [50, 15, 10]
