"Baselines (multiclust.baselines) and the method registry (multiclust.methods): every method end to end, bad input, the oracle and control labels."

import numpy as np
import pytest
import torch

from multiclust.clip import PromptError, tiny_clip
from multiclust.data import Dataset, load_dataset
from multiclust.features import extract_features
from multiclust.core import ClusterResult
from multiclust.baselines import MultiMaP, hull_residual, text_anchored, zeroshot
from multiclust.proxy import image_embeddings, prompt_embeddings
from multiclust.methods import METHODS, MissingWords, run_method


pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache


@pytest.fixture(scope='module')
def enc():
    return tiny_clip()


@pytest.fixture
def syn():
    return load_dataset('synthetic').subset(range(48))


def _ok(r: ClusterResult, k, n):
    assert isinstance(r, ClusterResult)
    assert r.k == k and r.labels.shape == (n,)
    assert all(np.isfinite(r.metrics[m]) for m in ('nmi', 'ri', 'ari', 'acc')), r.metrics
    assert r.encoder['encoder'] == 'tiny' and r.runtime_s > 0


def test_registry_names():
    assert list(METHODS) == ['kmeans', 'zeroshot-gpt', 'zeroshot-label', 'text-anchored', 'multimap', 'multisub',
                             'zeroshot-wordnet', 'multisub-wordnet', 'multisub-randwords', 'multidproxy']


@pytest.mark.parametrize('name', [n for n in METHODS if n != 'multidproxy'])
def test_every_method_runs(enc, syn, name):
    r = run_method(name, enc, syn, 'shape', seed=1, quick=True)
    _ok(r, syn.n_clusters('shape'), len(syn))
    assert r.seed == 1 and r.concept == 'shape' and r.params['quick'] is True
    want = {'kmeans': 'none', 'zeroshot-label': 'true-labels (oracle)', 'multisub-randwords': 'random-nouns (control)'}
    if METHODS[name].words == 'wordnet': assert r.word_source.startswith("wordnet-hyponyms (synset ") and "of 'shape'" in r.word_source
    else: assert r.word_source == want.get(name, 'authored')
    assert r.method == (name + ' (oracle)' if name == 'zeroshot-label' else name)


def test_multidproxy_gets_the_candidate_list(enc, syn):
    r = run_method('multidproxy', enc, syn, 'color', quick=True)
    _ok(r, syn.n_clusters('color'), len(syn))
    assert r.method == 'multidproxy' and r.params['n_candidates_given'] > 12     # the registry hands it the whole candidate list


def test_randwords_are_seeded_and_as_many(enc, syn):
    fs = extract_features(enc, syn, progress=False)
    a = run_method('multisub-randwords', enc, syn, 'color', seed=0, feats=fs, quick=True)
    b = run_method('multisub-randwords', enc, syn, 'color', seed=1, feats=fs, quick=True)
    ref = run_method('multisub', enc, syn, 'color', seed=0, feats=fs, quick=True)
    assert len(a.words) == len(b.words) == len(ref.words) and a.words != b.words
    assert not set(a.words) & set(ref.words)


def test_zeroshot_label_oracle_exact(enc):
    "Features projecting onto the class-name prompts: zero-shot with the true names is exact."
    classes, tpl = ['no_glasses', 'sunglasses', 'reading glasses'], 'a face with the eyewear of *'
    T = enc.encode_text([tpl.replace('*', c.replace('_', ' ')) for c in classes]).detach()
    Fc = torch.linalg.lstsq(enc.image_projection.weight.detach(), T.T).solution.T
    y = np.repeat(np.arange(3), 7)
    r = zeroshot(enc, Fc[y], tpl, classes, 3, y)
    assert (r.labels == y).all() and r.metrics['nmi'] == pytest.approx(1.0) and r.metrics['acc'] == pytest.approx(1.0)


def test_text_anchored_is_cosine_matrix(enc):
    g = torch.Generator().manual_seed(1)
    fs = torch.randn(30, enc.feature_dim, generator=g)
    words = ['red', 'green', 'blue', 'gold']
    r = text_anchored(enc, fs, 'a car with the color of *', words, 3)
    V, T = image_embeddings(enc, fs), prompt_embeddings(enc, 'a car with the color of *', words)
    np.testing.assert_allclose(r.embeddings['anchored'], (V @ T.T).numpy(), atol=1e-6)
    assert len(set(r.labels)) == 3


def test_multimap_proxy_is_free(enc):
    g = torch.Generator().manual_seed(2)
    fs = torch.randn(24, enc.feature_dim, generator=g)
    mm = MultiMaP(enc, epochs=2, batch_size=8, n_init=2)
    r = mm.fit_features(fs, 'a fruit with the color of *', ['red', 'green', 'blue'], 3, concept='color')
    Z = mm.state_.Z
    assert (hull_residual(r.embeddings['proxy_token'], Z) > 1e-3 * Z.norm(dim=-1).mean()).all()
    start = mm.state_.Tw[mm.state_.zs].numpy()          # space='token' starts at the zero-shot word's text feature
    assert not np.allclose(r.embeddings['proxy_token'], start)                        # it moved from there


# ------------------------------------------------------------------------ bad input
def test_unknown_method_lists_methods(enc, syn):
    with pytest.raises(ValueError, match="unknown method 'clip'; METHODS: kmeans, zeroshot-gpt, zeroshot-label"):
        run_method('clip', enc, syn, 'color')


@pytest.mark.parametrize('k,msg', [(1, 'at least 2'), (49, r'larger than the number of images \(48\)'), (2.5, 'integer')])
def test_bad_k(enc, syn, k, msg):
    with pytest.raises(ValueError, match=msg):
        run_method('zeroshot-gpt', enc, syn, 'color', k=k)


def test_concept_without_reference_words(enc, syn, tmp_path, monkeypatch):
    "An empty reference-word cache and no LLM: a clear error naming dataset and concept, before any feature work."
    monkeypatch.setenv('MULTICLUST_REFWORDS', str(tmp_path / 'empty.json'))
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    monkeypatch.delenv('OPENAI_BASE_URL', raising=False)
    for name in ('zeroshot-gpt', 'text-anchored', 'multimap', 'multisub', 'multisub-randwords'):
        with pytest.raises(MissingWords, match=r"dataset 'synthetic\[48\]', concept 'color'.*pass words="):
            run_method(name, enc, syn, 'color', quick=True)
    r = run_method('zeroshot-gpt', enc, syn, 'color', words=['red', 'blue'])           # words= is the way out
    assert r.word_source == 'user'
    assert run_method('zeroshot-label', enc, syn, 'color').word_source == 'true-labels (oracle)'


def test_folder_dataset_needs_words_and_gets_the_default_template(enc, syn):
    mine = Dataset(syn.root, syn.paths, {'tint': syn.labels('color')}, name='mine')
    with pytest.raises(MissingWords, match="dataset 'mine', concept 'tint'"):       # no template is not the problem
        run_method('multimap', enc, mine, 'tint')
    with pytest.raises(MissingWords, match="dataset 'mine', concept 'tint'"):
        run_method('multimap', enc, mine, 'tint', template='a shape of *')
    r = run_method('multimap', enc, mine, 'tint', template='a shape of *', words=['red', 'blue', 'green'], quick=True)
    assert r.k == mine.n_clusters('tint')


def test_bad_options_and_feats(enc, syn):
    fs = extract_features(enc, syn, progress=False)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rounds'\]"):
        run_method('multimap', enc, syn, 'color', feats=fs, rounds=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temperature'\]"):
        run_method('zeroshot-gpt', enc, syn, 'color', feats=fs, temperature=0.1)
    with pytest.raises(ValueError, match='5 rows for the 48 images'):
        run_method('kmeans', enc, syn, 'color', feats=fs[:5])
    with pytest.raises(ValueError, match='NaN/inf'):
        run_method('kmeans', enc, syn, 'color', feats=fs * float('nan'))
    with pytest.raises(PromptError, match='non-empty list'):
        run_method('zeroshot-gpt', enc, syn, 'color', feats=fs, words=[])
    with pytest.raises(PromptError, match=r"exactly one '\*'"):
        run_method('zeroshot-gpt', enc, syn, 'color', feats=fs, template='a shape')


def test_offline_encoder_synthetic(offline_encoder, tmp_path):
    "The real (offline, pretrained) encoder through the registry on a small subset: every method scores."
    ds = load_dataset('synthetic').subset(range(36))
    fs = extract_features(offline_encoder, ds, progress=False)
    for name in METHODS:
        r = run_method(name, offline_encoder, ds, 'shape', feats=fs, quick=True)
        assert r.k == ds.n_clusters('shape') and np.isfinite(r.metrics['nmi']) and r.encoder['encoder'] == 'offline'


def test_multimap_contrast_is_the_other_concepts(enc, syn):
    "The registry runs Multi-MaP with the dataset's other concepts as contrast and records them in the row."
    fs = extract_features(enc, syn, progress=False)
    r = run_method('multimap', enc, syn, 'color', feats=fs, quick=True, epochs=1)
    assert r.params['contrast'] == [c for c in syn.concepts if c != 'color'] and r.params['gamma'] == 0.2
    assert r.params['contrast_from'] == "the dataset's other concepts"
    assert 'contrast' in r.history[0]
    one = Dataset(syn.root, syn.paths, {'tint': syn.labels('color')}, name='one')
    r1 = run_method('multimap', enc, one, 'tint', feats=fs, quick=True, epochs=1, template='a shape of *',
                    words=['red', 'blue', 'green'])
    assert r1.params['contrast'] == [] and r1.params['gamma'] == 0.0
    assert r1.params['contrast_from'] == "none: 'one' has no concept besides 'tint'"
    r0 = run_method('multimap', enc, syn, 'color', feats=fs, quick=True, epochs=1, contrast=[], gamma=0.0)
    assert r0.params['contrast'] == [] and 'contrast_from' not in r0.params and 'contrast' not in r0.history[0]


def test_multimap_official_step_sizes(enc):
    "Defaults are the official code's (parse.py): Adagrad lr 0.005, batch 20, 50 epochs, alpha = beta = 0.2."
    p = MultiMaP(enc).params
    assert (p['lr'], p['batch_size'], p['epochs'], p['alpha'], p['beta'], p['space']) == (0.005, 20, 50, 0.2, 0.2, 'token')
    assert METHODS['multimap'].budgets(quick=False)['epochs'] == 50
