"""The toy CLIP (multiclust.toyclip): captions, scenes, weights file, encoder seam, and the paper's claim as a
behavioural test — on the embedded `synthetic` dataset the word a user gives decides the clustering."""
import json, shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import multiclust.toyclip as T
from multiclust.steering import steering_matrix
from multiclust.files import file_digest
from multiclust.clip import WeightsUnavailable, load_encoder
from multiclust.synthetic import SYNTH_CONCEPTS
from multiclust.data import load_dataset


@pytest.fixture(scope='module')
def enc():
    return load_encoder('toyclip')


@pytest.fixture(scope='module')
def syn():
    return load_dataset('synthetic')


# --- captions and scenes ----------------------------------------------------------------------------------------
def test_captions_name_colour_and_shape_truthfully_and_fit_the_context():
    rng, tok = np.random.default_rng(0), T.toy_tokenizer()
    attrs = T.synthetic_attributes(300, seed=[T.SEED_TAG, 5, 0])
    for a in attrs:
        text, named = T.sample_caption(a, rng)
        assert {'color', 'shape'} <= set(named), text
        assert all(a[k] == v for k, v in named.items()), (text, a)
        assert len(tok.encode(text)) + 2 <= T.TOYCLIP_CONFIG['text_cfg']['context_length'], text
        for k, v in named.items():              # the caption contains a word for every attribute it claims to name
            assert any(w in text for w in T.CAPTION_WORDS[k][v]), (text, k, v)


def test_partial_captions_create_more_in_batch_false_negatives():
    rng = np.random.default_rng(3)
    attrs = T.synthetic_attributes(128, seed=[T.SEED_TAG, 6, 0], exclude=T.HELDOUT_COMBOS)
    fn = {s: np.mean([T.false_negatives([T.sample_caption(a, rng, s)[1] for a in attrs], attrs).mean()
                      for _ in range(10)]) for s in T.CAPTION_SCHEMES}
    assert fn['full'] < fn['color+shape'] < fn['partial'], fn


def test_training_scenes_are_disjoint_from_the_embedded_default(syn):
    attrs, ims = T.toy_scenes(40, seed=0)
    assert not any(T.is_heldout(a) for a in attrs)
    ref = torch.stack([torch.from_numpy(np.array(syn.load_image(i))) for i in range(len(syn))]).flatten(1)
    assert not (ims.flatten(1)[:, None] == ref[None]).all(-1).any()


def test_unknown_scheme_and_bad_training_arguments_fail_clearly():
    with pytest.raises(KeyError): T.sample_caption(dict(color='red', shape='star', size='small', background='plain'),
                                                   np.random.default_rng(0), 'nonsense')
    with pytest.raises(ValueError, match='pool >= batch_size'): T.train_toyclip(steps=1, batch_size=64, pool=8)


# --- training, weights file, loading ------------------------------------------------------------------------------
def test_training_is_deterministic_and_restores_global_settings():
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    kw = dict(steps=2, batch_size=16, pool=32, progress=False)
    (a, _), (b, _) = T.train_toyclip(**kw), T.train_toyclip(**kw)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_shipped_weights_match_their_record():
    p = T.shipped_weights()
    assert p.is_file(), f"{p} missing"
    rec = json.loads(p.with_suffix('.json').read_text())
    assert rec["sha256"] == file_digest(p) and rec['format'] == T.WEIGHTS_FORMAT
    assert 'train_and_save' in rec['command'] and rec['training']['steps_done'] == rec['training']['steps']
    assert p.stat().st_size < 10e6


def test_corrupt_or_foreign_weights_are_refused(tmp_path):
    src = T.shipped_weights(); sha = json.loads(src.with_suffix('.json').read_text())['sha256']
    bad = tmp_path / 'toyclip-v1.safetensors'
    data = bytearray(src.read_bytes()); data[-100] ^= 0xFF; bad.write_bytes(bytes(data))
    shutil.copy(src.with_suffix('.json'), bad.with_suffix('.json'))
    with pytest.raises(WeightsUnavailable, match='does not match'): T.load_toyclip(weights=bad)
    junk = tmp_path / 'junk.safetensors'; junk.write_bytes(b'not safetensors')
    with pytest.raises(WeightsUnavailable, match='junk.safetensors'): T.read_toyclip(junk)
    with pytest.raises(WeightsUnavailable, match='not found'): T.load_toyclip(weights=tmp_path / 'nope.safetensors')
    lone = tmp_path / 'lone.safetensors'; shutil.copy(src, lone)
    with pytest.raises(WeightsUnavailable, match='no record'): T.load_toyclip(weights=lone)


def test_missing_weights_train_into_the_cache_or_say_how(tmp_path, monkeypatch):
    monkeypatch.setenv('MULTICLUST_TOYCLIP', str(tmp_path / 'absent.safetensors'))
    monkeypatch.setenv('MULTICLUST_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(WeightsUnavailable, match='train=True'): T.load_toyclip(train=False)
    e = T.load_toyclip(train='auto', steps=1, batch_size=8, pool=8, progress=False)
    cached = tmp_path / 'cache' / 'toyclip' / 'toyclip-v1.safetensors'
    assert cached.is_file() and cached.with_suffix('.json').is_file()
    assert e.name == 'toyclip' and Path(e.weights_path) == cached


def test_toyclip_behind_the_encoder_seam(enc):
    assert (enc.name, enc.feature_dim, enc.embed_dim) == ('toyclip', 512, 128)
    prompts = ['a shape with the color of *', 'a drawing of a *']
    ids = enc.tokenize(prompts)
    assert ids.shape[1] == 16
    with torch.no_grad():
        assert torch.allclose(enc.encode_tokens(ids, enc.token_embeddings(ids)), enc.encode_text(prompts), atol=1e-6)
    assert enc.star_positions(ids).tolist() == [7, 5]   # <start> a shape with the color of * / <start> a drawing of a *
    assert enc.word_token_embedding('polka dot').shape == (128,)


# --- what the model learned --------------------------------------------------------------------------------------
def test_zero_shot_on_the_embedded_default(enc, syn):
    from multiclust.features import extract_features
    V = enc.project(extract_features(enc, syn, progress=False)).detach()
    attrs = [{c: syn.labels(c)[i] for c in SYNTH_CONCEPTS} for i in range(len(syn))]
    acc = {r['attribute']: r for r in T.zero_shot_accuracy(enc, V, attrs)}
    # measured with the shipped weights: seen colour .987, shape .873, size .993, background 1.0;
    # held-out colour x shape pairs: colour 1.0, shape .617, size .917, background 1.0
    for c in ('color', 'size', 'background'): assert acc[c]['seen'] > 0.95, acc[c]
    assert acc['shape']['seen'] > 0.75, acc['shape']
    assert acc['color']['heldout'] > 0.95, acc['color']
    assert acc['shape']['heldout'] > 0.4, acc['shape']       # above chance (.2), below the seen pairs
    assert acc['shape']['heldout'] < acc['shape']['seen']


# --- the claim -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def steer(enc, syn):
    rows = steering_matrix(enc, syn, sources=('class names', 'llm', 'random'), eval_rounds=False, text_embeddings=False)
    return {(r['method'], r['asked'], r['words'].split(' (')[0]): r for r in rows}


@pytest.mark.parametrize('words', ['class names', 'llm cache'])
def test_the_word_steers_multisub(steer, words):
    col, sha = steer[('multi-sub', 'color', words)], steer[('multi-sub', 'shape', words)]
    # measured (MultiSub seed 0): class names colour .64/.28, shape .10/.64; LLM cache colour .72/.15, shape .11/.63
    assert col['nmi_color'] > col['nmi_shape'] + MARGIN, col
    assert sha['nmi_shape'] > sha['nmi_color'] + MARGIN, sha


def test_random_words_do_not_ask_for_shape(steer):
    # the control: with random nouns the shape prompt no longer picks shape. Measured over MultiSub/random-noun seeds
    # 0-2: shape NMI .31-.34 with random nouns vs .64-.66 with real words; the random result leans to colour (.47-.49)
    rnd = steer[('multi-sub', 'shape', 'random')]
    assert steer[('multi-sub', 'shape', 'class names')]['nmi_shape'] > rnd['nmi_shape'] + MARGIN
    assert steer[('multi-sub', 'shape', 'llm cache')]['nmi_shape'] > rnd['nmi_shape'] + MARGIN
    assert rnd['nmi_color'] > rnd['nmi_shape'], rnd     # it does not follow the request (smallest gap measured: .13)


MARGIN = 0.2
