"""Omniglot loading, splits and augmentation, on the real images and on a synthetic tree."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import DATA, make_cfg
from test_configs import METHODS

from leapbench.data.omniglot import Omniglot, _affine, make_augment
from leapbench.errors import ConfigError, DataError


def load(num_pretrain, cache, **kw):
    return Omniglot(str(DATA), num_pretrain, cache_dir=str(cache), download=False, **kw)


@pytest.mark.data
def test_fixed_split_invariants(shared_cache):
    splits = {n: load(n, shared_cache) for n in (0, 1, 5, 30)}
    names = {
        n: ([t.name for t in s.pretrain], [t.name for t in s.val], [t.name for t in s.test]) for n, s in splits.items()
    }
    tests = {tuple(v[2]) for v in names.values()}
    vals = {tuple(v[1]) for v in names.values()}
    assert len(tests) == 1 and len(vals) == 1, "test/val alphabets moved with num_pretrain"
    pre30, val, test = names[30]
    assert len(test) == 10 and len(val) == 6 and len(pre30) == 30
    assert not set(pre30) & set(val) and not set(pre30) & set(test) and not set(val) & set(test)
    for n in (1, 5):
        assert names[n][0] == pre30[:n]  # pretraining tasks are a prefix of one fixed pool
    # alphabets with < 20 characters never appear
    assert not {
        "Blackfoot_(Canadian_Aboriginal_Syllabics)",
        "Inuktitut_(Canadian_Aboriginal_Syllabics)",
        "Ojibwe_(Canadian_Aboriginal_Syllabics)",
        "Tagalog",
    } & set(pre30 + val + test)
    t = splits[5].test[0]
    assert t.x_train.shape == (300, 1, 28, 28) and t.x_heldout.shape == (100, 1, 28, 28)
    assert torch.equal(torch.bincount(t.y_train), torch.full((20,), 15))
    assert torch.equal(torch.bincount(t.y_heldout), torch.full((20,), 5))
    assert set(t.x_train.unique().tolist()) == {0.0, 1.0}  # the reference resize leaves 1-bit images
    assert [x.task_id for x in splits[5].pretrain] == list(range(5))


@pytest.mark.data
def test_split_is_deterministic_and_seeded(shared_cache):
    a, b = load(3, shared_cache), load(3, shared_cache)
    assert torch.equal(a.test[0].x_train, b.test[0].x_train) and a.test[0].name == b.test[0].name
    other = load(3, shared_cache, split_seed=1)
    assert [t.name for t in other.test] != [t.name for t in a.test]


@pytest.mark.data
def test_the_seed_is_the_split_and_methods_share_it(shared_cache):
    """As in the paper's seeds: each run seed is its own split; within a seed the test and validation
    alphabets do not move with num_pretrain, and every method composes the same data config."""
    by_seed = {}
    for seed in range(5):
        cfgs = {m: make_cfg(f"method={m}", f"seed={seed}", "data.num_pretrain=30").data for m in METHODS}
        assert all(c == cfgs["leap"] for c in cfgs.values()), "a method changed the data config"
        few, all_ = load(1, shared_cache, split_seed=seed), load(30, shared_cache, split_seed=seed)
        names = lambda s: ([t.name for t in s.pretrain], [t.name for t in s.val], [t.name for t in s.test])  # noqa: E731
        (p1, v1, t1), (p30, v30, t30) = names(few), names(all_)
        assert (t1, v1) == (t30, v30) and p1 == p30[:1]
        assert len(set(p30) | set(v30) | set(t30)) == 30 + 6 + 10  # pretraining, validation and test never overlap
        assert torch.equal(few.test[0].x_train, all_.test[0].x_train)  # the same characters, too
        by_seed[seed] = (tuple(t30), tuple(v30))
    assert len({t for t, _ in by_seed.values()}) == 5, "two seeds share their test alphabets"


@pytest.mark.data
def test_legacy_split_follows_the_reference(shared_cache):
    """The reference split: test = the 10 alphabets after the pretraining prefix, val = the rest."""
    s1, s5 = load(1, shared_cache, legacy_split=True), load(5, shared_cache, legacy_split=True)
    assert len(s1.test) == 10 and len(s1.val) == 46 - 1 - 10 and len(s5.val) == 46 - 5 - 10
    assert [t.name for t in s1.test] != [t.name for t in s5.test]  # the reference's moving test set
    assert [t.name for t in s5.pretrain][:1] == [t.name for t in s1.pretrain]
    with pytest.raises(ConfigError):
        load(37, shared_cache, legacy_split=True)


@pytest.mark.data
def test_too_many_pretraining_tasks(shared_cache):
    with pytest.raises(ConfigError, match="num_pretrain=31.*0..30"):
        load(31, shared_cache)


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="images_background.*LEAP_DATA_DIR"):
        Omniglot(str(tmp_path / "nowhere"), 1, download=False)


def test_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    """A download that fails half-way (here: after writing part of an archive) removes what it made, down to the
    parent folders it had to create; folders that were there stay."""
    import torchvision.datasets

    def partial(root, background, download):
        (Path(root) / "omniglot-py").mkdir()
        (Path(root) / "omniglot-py" / "images_background.zip").write_bytes(b"PK")
        raise OSError("connection reset")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", partial)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("there before")
    with pytest.raises(DataError, match="downloading it failed .*connection reset"):
        Omniglot(str(tmp_path / "kept" / "new" / "deeper"), 1, download=True)
    with pytest.raises(DataError, match="downloading it failed"):  # into a folder that exists and holds a file
        Omniglot(str(tmp_path / "kept"), 1, download=True)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept", "kept/mine.txt"]


def test_corrupt_image_names_the_file(fake_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)
    bad = sorted((root / "omniglot" / "images_background" / "Alphabet_0" / "character03").glob("*.png"))[2]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=bad.name):
        Omniglot(str(root), 1, num_test=1, num_val=1, download=False)


def test_corrupt_cache_is_rebuilt(fake_root, tmp_path):
    first = Omniglot(str(fake_root), 1, num_test=1, num_val=1, download=False, cache_dir=str(tmp_path))
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(b"not a zip")
    again = Omniglot(str(fake_root), 1, num_test=1, num_val=1, download=False, cache_dir=str(tmp_path))
    assert torch.equal(first.test[0].x_train, again.test[0].x_train)


def test_rotation_matches_rot90():
    x = torch.rand(3, 1, 28, 28)
    out = _affine(x, torch.tensor([[math.pi / 2, 1.0, 0.0, 0.0]]).expand(3, 4), fill=0.0)
    assert torch.equal(out, torch.rot90(x, 1, (2, 3))) or torch.equal(out, torch.rot90(x, -1, (2, 3)))
    same = _affine(x, torch.tensor([[0.0, 1.0, 0.0, 0.0]]).expand(3, 4), fill=0.0)
    assert torch.equal(same, x)


def test_augmentations():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(50, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 0.0  # a dark stroke on white, like Omniglot
    ref, ref_heldout = make_augment("reference")
    out = ref(x, g)
    assert ref_heldout and set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out[:, :, 0, 0] == 0).any()  # the reference fills exposed corners with 0 (black)
    rot, rot_heldout = make_augment("rotate36")
    out = rot(x, g)
    assert (
        not rot_heldout and (out.sum((1, 2, 3)) == x.sum((1, 2, 3))).float().mean() > 0.2
    )  # 90-degree multiples keep mass
    assert (out[:, :, 0, 0] == 1).all()  # background fill
    assert make_augment("none") == (None, False)
    with pytest.raises(ConfigError):
        make_augment("flip")


def test_batches_cover_each_epoch_once(fake_root):
    task = Omniglot(str(fake_root), 1, num_test=1, num_val=1, download=False, augment="none").pretrain[0]
    n = len(task.y_train)  # 20 characters x 1 training image
    seen = torch.cat([y for _, y in task.batches(n // 4, 4, torch.Generator().manual_seed(0))])
    assert torch.equal(seen.sort().values, task.y_train.sort().values)
