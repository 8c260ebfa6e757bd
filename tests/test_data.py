"""Integration and bad-input tests for multiclust.data and the chapters split from it (synthetic, features,
concept_tree), and for multiclust.metrics (the notebooks hold the unit checks)."""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import require_dataset

from multiclust.core import DataError
from multiclust.synthetic import render, synthetic_attributes, synthetic_combos
from multiclust.data import REGISTRY, ConceptSpec, Dataset, data_root, load_dataset, make_synthetic
from multiclust.concept_tree import convert_concept_tree
from multiclust.features import extract_features, feature_cache_key
from multiclust.metrics import evaluate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    "Generated data and features go to a temporary cache, never to ~/.cache."
    monkeypatch.setenv('MULTICLUST_CACHE', str(tmp_path/'cache'))


def write_set(d: Path, header: str, rows: list[str], images=None, mode='RGB'):
    (d/'images').mkdir(parents=True, exist_ok=True)
    (d/'labels.csv').write_text(header + '\n' + '\n'.join(rows) + '\n')
    for p in (images if images is not None else [r.split(',')[0] for r in rows]):
        Image.new(mode, (10, 10), 90).save(d/p)
    return d


ROWS = ['images/a.png,red,apple', 'images/b.png,green,apple', 'images/c.png,red,grape']


# ---------------------------------------------------------------- registry
def test_registry_matches_paper_counts_and_cards_exist():
    want = {'fruit': dict(color=3, species=3), 'fruit360': dict(color=4, species=4), 'cards': dict(order=13, suits=4),
            'cmuface': dict(emotion=4, identity=20, glass=2, pose=4), 'cars': dict(color=4, type=3),
            'flowers': dict(color=4, species=4), 'cifar10': dict(type=2, environment=3),
            'synthetic': dict(color=6, shape=5, size=2, background=3)}
    assert {k: {c: s.n_clusters for c, s in spec.concepts.items()} for k, spec in REGISTRY.items()} == want
    for spec in REGISTRY.values():
        assert (REPO/spec.card).is_file(), spec.card
        assert spec.object_word
        for c in spec.concepts.values():
            assert c.template.count('*') == 1
            assert c.prompt('word').count('word') == 1
    with pytest.raises(ValueError, match="exactly one"):
        ConceptSpec('color', 3, 'a ** b')


# ---------------------------------------------------------------- bad input
def test_missing_path_column(tmp_path):
    d = write_set(tmp_path/'x', 'file,color', ['images/a.png,red', 'images/b.png,blue'])
    with pytest.raises(DataError, match=r"labels\.csv: no 'path' column"):
        load_dataset(d)


def test_missing_file_named(tmp_path):
    d = write_set(tmp_path/'x', 'path,color,species', ROWS, images=['images/a.png', 'images/b.png'])
    with pytest.raises(DataError, match=r"1 of 3 listed file\(s\) missing.*images/c\.png"):
        load_dataset(d)
    assert len(load_dataset(d, validate='none')) == 3   # opt-out of file checks


def test_undecodable_image_fails_at_load_time_naming_file(tmp_path):
    d = write_set(tmp_path/'x', 'path,color,species', ROWS)
    (d/'images'/'b.png').write_bytes(b'\x89PNG garbage')
    ds = load_dataset(d)                              # default: existence only
    assert ds.load_image(0).size == (10, 10)
    with pytest.raises(DataError, match=r"cannot decode image .*images/b\.png"):
        ds.load_image(1)
    with pytest.raises(DataError, match=r"images/b\.png"):
        load_dataset(d, validate='full')


def test_empty_cell_and_empty_column(tmp_path):
    d = write_set(tmp_path/'x', 'path,color,species', ['images/a.png,red,apple', 'images/b.png,green,', 'images/c.png,red,grape'])
    with pytest.raises(DataError, match=r"line 3 \(path 'images/b\.png'\): empty value in column 'species'"):
        load_dataset(d)
    d = write_set(tmp_path/'y', 'path,color,species', ['images/a.png,red,', 'images/b.png,green,'])
    with pytest.raises(DataError, match=r"column 'species' \(concept 'species'\) is empty"):
        load_dataset(d)


def test_single_class_concept(tmp_path):
    d = write_set(tmp_path/'x', 'path,color,species', ['images/a.png,red,apple', 'images/b.png,green,apple'])
    with pytest.raises(DataError, match=r"column 'species'.*single class 'apple'"):
        load_dataset(d)


def test_ragged_row(tmp_path):
    d = write_set(tmp_path/'x', 'path,color,species', ['images/a.png,red,apple', 'images/b.png,green'], images=['images/a.png', 'images/b.png'])
    with pytest.raises(DataError, match=r"line 3 has 2 fields, the header has 3"):
        load_dataset(d)


def test_data_root_errors_say_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv('MULTICLUST_DATA', raising=False)
    with pytest.raises(DataError, match=r"MULTICLUST_DATA"):
        load_dataset('cards')
    with pytest.raises(DataError, match=r"does not exist.*set MULTICLUST_DATA or pass root="):
        load_dataset('cards', root=tmp_path/'nope')
    monkeypatch.setenv('MULTICLUST_DATA', str(tmp_path/'nope'))
    with pytest.raises(DataError, match=r"from MULTICLUST_DATA"):
        data_root()
    with pytest.raises(DataError, match=r"not found: no .*cards/labels\.csv"):
        load_dataset('cards', root=tmp_path)


def test_unknown_dataset_lists_known(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*known: \['cards', 'cars', 'cifar10', 'cmuface', 'flowers', 'fruit', 'fruit360', 'synthetic'\]"):
        load_dataset('mnist', root=tmp_path)


def test_unknown_concept_lists_concepts(tmp_path):
    ds = load_dataset(write_set(tmp_path/'x', 'path,color,species', ROWS))
    for f in (ds.labels, ds.label_ids, ds.classes, ds.n_clusters):
        with pytest.raises(DataError, match=r"no concept 'shape'; its concepts are \['color', 'species'\]"):
            f('shape')


def test_registered_folder_missing_column_and_extra_column(tmp_path):
    d = write_set(tmp_path/'cifar10', 'path,type,class', ['images/a.png,animal,cat', 'images/b.png,vehicle,ship'])
    with pytest.raises(DataError, match=r"needs column\(s\) \['environment'\]"):
        load_dataset(d)
    d = write_set(tmp_path/'r'/'cifar10', 'path,type,environment,class',
                  ['images/a.png,animal,land,cat', 'images/b.png,vehicle,water,ship', 'images/c.png,vehicle,air,airplane'])
    with warnings.catch_warnings():
        warnings.simplefilter('error')                             # counts match the paper: no warning
        ds = load_dataset('cifar10', root=tmp_path/'r')
    assert ds.concepts == ['type', 'environment'] and ds.counts() == dict(type=2, environment=3)


def test_count_mismatch_with_paper_warns(tmp_path):
    d = write_set(tmp_path/'cars', 'path,color,type', ['images/a.png,red,suv', 'images/b.png,white,sedan', 'images/c.png,red,hatchback'])
    with pytest.warns(UserWarning, match=r"concept 'color' has 2 classes .* registry says 4"):
        ds = load_dataset(d)
    assert ds.n_clusters('color') == 2


def test_grayscale_and_rgba_become_rgb(tmp_path):
    d = write_set(tmp_path/'g', 'path,color', ['images/a.png,red', 'images/b.png,blue'], mode='L')
    Image.new('RGBA', (10, 10), (255, 0, 0, 128)).save(d/'images'/'b.png')
    ds = load_dataset(d)
    assert ds.load_image(0).mode == 'RGB' and ds.load_image(1).mode == 'RGB'
    assert ds.label_ids('color').tolist() == [1, 0] and ds.classes('color') == ['blue', 'red']


# ---------------------------------------------------------------- synthetic
def test_synthetic_without_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv('MULTICLUST_DATA', raising=False)
    ds = load_dataset('synthetic', n=48, seed=1)
    assert ds.name == 'synthetic' and len(ds) == 48 and ds.spec is REGISTRY['synthetic']
    assert ds.counts() == dict(color=6, shape=5, size=2, background=3)
    assert str(ds.root).startswith(str(tmp_path/'cache'))
    assert not [p for p in ds.root.parent.iterdir() if '.tmp-' in p.name]     # atomic: no temp folder left
    ds2 = make_synthetic(root=tmp_path/'other', n=48, seed=1)
    assert all(np.array_equal(np.asarray(ds.load_image(i)), np.asarray(ds2.load_image(i))) for i in (0, 17, 47))
    assert ds.labels('shape') == ds2.labels('shape')
    assert ds.load_image(0).size == (64, 64)


def test_synthetic_default_is_balanced_and_heldout_is_disjoint():
    att = synthetic_attributes(360, seed=0)
    combos = {tuple(a.values()) for a in att}
    assert len(combos) == 180
    held = [{'color': 'red', 'shape': 'star'}, {'color': 'blue', 'shape': 'circle'}]
    train = {tuple(a.values()) for a in synthetic_combos(exclude=held)}
    test = {tuple(a.values()) for a in synthetic_combos(only=held)}
    assert train.isdisjoint(test) and len(train | test) == 180
    ds = make_synthetic(n=12, seed=5, only=held)
    assert set(ds.classes('color')) == {'red', 'blue'} and set(ds.classes('shape')) == {'star', 'circle'}
    img = render(att[0], np.random.default_rng(0), size=96)
    assert img.size == (96, 96) and img.mode == 'RGB'


# ---------------------------------------------------------------- feature cache
class FakeEncoder:
    name, feature_dim = 'fake', 4

    def __init__(self, fingerprint='fp1', fail_at=None):
        self.fingerprint, self.fail_at, self.calls, self.images = fingerprint, fail_at, 0, 0

    def preprocess(self, img):
        return torch.tensor(np.asarray(img.resize((8, 8))), dtype=torch.float32).permute(2, 0, 1) / 255

    def encode_image_features(self, x):
        if self.calls == self.fail_at: raise KeyboardInterrupt('stop')
        self.calls += 1; self.images += len(x)
        return torch.cat([x.mean((2, 3)), x.std((1, 2, 3))[:, None]], 1)


def test_feature_cache_reuse_resume_and_invalidation(tmp_path):
    ds = make_synthetic(n=50, seed=2)
    cache = tmp_path/'feat'
    e = FakeEncoder()
    F = extract_features(e, ds, cache_dir=cache, batch_size=8, progress=False)
    assert F.shape == (50, 4) and e.calls == 7 and e.images == 50
    # reused, in this and (same files on disk) any other process
    e2 = FakeEncoder()
    assert torch.equal(extract_features(e2, ds, cache_dir=cache, batch_size=8, progress=False), F) and e2.calls == 0
    # interrupted mid-way: finished shards are kept, the rerun computes only the rest
    e3 = FakeEncoder('fp2', fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        extract_features(e3, ds, cache_dir=cache, batch_size=8, progress=False)
    key_dir = cache/feature_cache_key(e3, ds)
    assert len(list(key_dir.glob('part-*.safetensors'))) == 4 and not list(key_dir.glob('*.tmp'))
    e4 = FakeEncoder('fp2')
    F4 = extract_features(e4, ds, cache_dir=cache, batch_size=8, progress=False)
    assert e4.calls == 3 and e4.images == 50 - 32 and torch.equal(F4, F)
    assert list(key_dir.glob('part-*')) == [] and (key_dir/'features.safetensors').is_file()
    # a touched image keeps its features (the key hashes content, not mtimes) ...
    os.utime(ds.path(3), ns=(1, 2 * 10**9))
    e5 = FakeEncoder()
    assert torch.equal(extract_features(e5, ds, cache_dir=cache, batch_size=8, progress=False), F) and e5.calls == 0
    # ... other bytes under the same name, size and mtime do not
    st = ds.path(3).stat()
    Image.new('RGB', (64, 64), (1, 2, 3)).save(tmp_path/'other.png')
    other = (tmp_path/'other.png').read_bytes()
    ds.path(3).write_bytes(other); os.utime(ds.path(3), ns=(st.st_atime_ns, st.st_mtime_ns))
    e6 = FakeEncoder()
    F6 = extract_features(e6, ds, cache_dir=cache, batch_size=8, progress=False)
    assert e6.calls == 7 and not torch.equal(F6[3], F[3]) and torch.equal(F6[:3], F[:3])


def test_feature_cache_checksum_catches_flipped_bits(tmp_path):
    "Low bits flipped in the stored floats (values stay finite): detected, reported, recomputed; never used."
    ds = make_synthetic(n=20, seed=1)
    F = extract_features(FakeEncoder(), ds, cache_dir=tmp_path, batch_size=8, progress=False)
    f = tmp_path/feature_cache_key(FakeEncoder(), ds)/'features.safetensors'
    raw = bytearray(f.read_bytes()); start = 8 + int.from_bytes(raw[:8], 'little')
    for i in range(0, 20 * 4 * 4, 4): raw[start + i] ^= 0x3          # lowest mantissa bits of every float
    f.write_bytes(bytes(raw))
    from safetensors.torch import load_file
    bad = load_file(f)['features']
    assert torch.isfinite(bad).all() and not torch.equal(bad, F)
    e = FakeEncoder()
    with pytest.warns(UserWarning, match=r"features\.safetensors fails its checksum"):
        again = extract_features(e, ds, cache_dir=tmp_path, batch_size=8, progress=False)
    assert e.calls == 3 and torch.equal(again, F)


def test_feature_cache_default_dir_env_and_shape_check(tmp_path):
    ds = make_synthetic(n=5, seed=0)
    e = FakeEncoder()
    extract_features(e, ds, batch_size=4, progress=False)
    assert list((tmp_path/'cache'/'features').glob('*/features.safetensors'))
    class Wrong(FakeEncoder):
        feature_dim = 3
    with pytest.raises(ValueError, match=r"returned shape \(4, 4\), expected \(4, 3\)"):
        extract_features(Wrong('w'), ds, batch_size=4, progress=False)


# ---------------------------------------------------------------- converter
def test_convert_official_layout(tmp_path):
    src = tmp_path/'fruit'
    spec = {'color': {'red': ['1.jpg', '2.jpg'], 'green': ['3.jpg']}, 'species': {'apple': ['1.jpg', '3.jpg'], 'grape': ['2.jpg']}}
    for c, classes in spec.items():
        for k, files in classes.items():
            (src/c/k).mkdir(parents=True)
            for f in files: Image.new('RGB', (5, 5), (int(f[0]) * 40, 0, 0)).save(src/c/k/f)
    with pytest.warns(UserWarning, match="registry says 3"):   # 2 colours here, 3 in the paper
        ds = load_dataset(convert_concept_tree(src))           # folder named 'fruit' -> registry spec
    assert ds.spec is REGISTRY['fruit']
    lab = dict(zip([Path(p).name for p in ds.paths], zip(ds.labels('color'), ds.labels('species'))))
    assert lab == {'1.jpg': ('red', 'apple'), '2.jpg': ('red', 'grape'), '3.jpg': ('green', 'apple')}
    with pytest.raises(DataError, match='exists; pass overwrite=True'):
        convert_concept_tree(src)
    # names that differ between trees: match by content, copied into a new folder
    (src/'species'/'grape'/'2.jpg').rename(src/'species'/'grape'/'two.jpg')
    with pytest.raises(DataError, match=r"2 image\(s\) are not in every concept tree \(missing per concept: \{'color': 1, 'species': 1\}"):
        convert_concept_tree(src, overwrite=True)
    out = convert_concept_tree(src, dst=tmp_path/'fruit_copy', match='content')
    ds = load_dataset(out, spec=None)
    assert ds.paths == ['images/green/3.jpg', 'images/red/1.jpg', 'images/red/2.jpg']
    assert ds.labels('species') == ['apple', 'apple', 'grape'] and (out/'images'/'red'/'2.jpg').is_file()
    # duplicate names within one tree -> error suggesting content matching
    (src/'color'/'green'/'1.jpg').write_bytes(b'x')
    with pytest.raises(DataError, match="same file name in concept 'color'; try match='content'"):
        convert_concept_tree(src, overwrite=True)


# ---------------------------------------------------------------- the workplace's benchmark copies
@pytest.mark.data
@pytest.mark.parametrize('name', ['cmuface', 'cards', 'cars'])
def test_shared_datasets_load_with_paper_counts(name):
    root = require_dataset(name)
    ds = load_dataset(name, root=root)
    paper = {c: s.n_clusters for c, s in REGISTRY[name].concepts.items()}
    assert ds.counts() == paper
    assert len(ds.file_signature()) == 64
    for i in (0, len(ds) - 1):
        assert ds.load_image(i).mode == 'RGB'
    # a few dozen images decode end to end and the metrics run on real labels
    sub = ds.subset(np.linspace(0, len(ds) - 1, 24).astype(int))
    F = extract_features(FakeEncoder(), sub, batch_size=8, progress=False)
    assert F.shape == (24, 4)
    # the metrics on two real labelings agree with scikit-learn's independent implementations
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, rand_score
    a, b = sub.labels(ds.concepts[0]), sub.labels(ds.concepts[1])
    r = evaluate(a, b)
    assert r['nmi'] == pytest.approx(normalized_mutual_info_score(a, b)) and r['ri'] == pytest.approx(rand_score(a, b))
    assert r['ari'] == pytest.approx(adjusted_rand_score(a, b)) and r['nmi'] < 1


def test_metrics_on_strings_vs_ints():
    t = ['a', 'a', 'b', 'b', 'c', 'c']
    assert evaluate(t, [0, 0, 1, 1, 1, 2]) == evaluate([3, 3, 7, 7, 9, 9], ['x', 'x', 'y', 'y', 'y', 'z'])
