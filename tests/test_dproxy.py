"Multi-DProxy (multiclust.dproxy): bad input, NaN handling, pruning schedule, Proposition 1, determinism, integration."
import warnings

import numpy as np
import pytest
from multiclust.metrics import evaluate
import torch
import torch.nn.functional as F

import multiclust.dproxy as dproxy
from multiclust.clip import PromptError, tiny_clip
from multiclust.dproxy import (CandidateProxies, GatedCrossModalFusion, MultiDProxy, candidate_budget,
                               candidate_embeddings, prune_candidates, proxy_shift)
from multiclust.core import ClusterResult, Task
from multiclust.multisub import MultiSub

TPL = 'a fruit with the color of *'
WORDS = ['red', 'yellow', 'green', 'blue', 'purple', 'orange', 'pink', 'white', 'brown', 'black', 'gray', 'gold',
         'maroon', 'crimson', 'lime', 'violet', 'navy', 'teal', 'beige', 'silver', 'cyan', 'magenta', 'olive', 'tan']
PLANTED = ['orange', 'gold', 'teal']
V1 = {k: v for k, v in MultiDProxy.V1.items() if k not in ('prune_every', 'score')}   # the mechanics tests: the first design


pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache


@pytest.fixture(scope='module')
def enc():
    return tiny_clip()


@pytest.fixture(scope='module')
def planted(enc):
    "60 features whose projections sit on the prompt embeddings of three mid-list words (3 groups of 20)."
    C = candidate_embeddings(enc, TPL, WORDS)
    g = torch.Generator().manual_seed(0)
    true = np.arange(60) % 3
    target = C[[WORDS.index(PLANTED[c]) for c in true]] + 0.05 * torch.randn(60, C.shape[1], generator=g)
    feats = torch.linalg.lstsq(enc.image_projection.weight.detach(), target.T).solution.T
    return feats, true


def _fit(enc, feats, words=WORDS, k=3, tpl=TPL, true=None, **kw):
    kw = {'epochs': 2, 'prune_every': 1, 'batch_size': 32, 'n_init': 1, **V1, **kw}
    return MultiDProxy(enc, **kw).fit_features(feats, tpl, words, k, true)


# ---------------------------------------------------------------- bad input
def test_fewer_candidates_than_clusters(enc, planted):
    feats, _ = planted
    with pytest.raises(ValueError, match='2 candidate words for K=3 clusters'):
        _fit(enc, feats, words=['red', 'green'])
    with pytest.raises(ValueError, match='M=2 final candidates is fewer than K=3'):
        _fit(enc, feats, M=2)
    with pytest.raises(ValueError, match='only 24 candidate words'):
        _fit(enc, feats, M=25)


@pytest.mark.parametrize('words,msg', [(['red', 'red', 'blue'], "'red' appears twice"), (['red', '', 'blue'], 'is empty'),
                                       ('red', 'got the string'), ([], 'empty candidate word list')])
def test_bad_words(enc, planted, words, msg):
    with pytest.raises(PromptError, match=msg):
        _fit(enc, planted[0], words=words, k=2)


def test_bad_template_k_features(enc, planted):
    feats, _ = planted
    with pytest.raises(PromptError, match=r"exactly one '\*'"): _fit(enc, feats, tpl='a fruit with the color of red')
    with pytest.raises(ValueError, match='at least 2'): _fit(enc, feats, k=1)
    with pytest.raises(ValueError, match=r'larger than the number of images \(60\)'): _fit(enc, feats, k=61)
    bad = feats.clone(); bad[[4, 9], 0] = float('nan')
    with pytest.raises(ValueError, match=r'rows \[4, 9\]'): _fit(enc, bad)
    with pytest.raises(ValueError, match=r'features must be \(N, 32\)'): _fit(enc, feats[:, :10])
    with pytest.raises(ValueError, match='not divisible by heads=5'): _fit(enc, feats, heads=5)
    with pytest.raises(ValueError, match='prune_every'): MultiDProxy(enc, prune_every=0)
    with pytest.raises(ValueError, match='score must be'): MultiDProxy(enc, score='median')


def test_R_larger_than_epochs_warns_and_does_not_prune(enc, planted):
    with pytest.warns(UserWarning, match='larger than the epoch budget'):
        r = _fit(enc, planted[0], epochs=3, prune_every=4, M=5)
    assert r.params['n_candidates_start'] == 5 and r.params['prune_rounds'] == 0
    assert not [h for h in r.history if h['event'] == 'prune']
    assert r.params['kept_words'] == WORDS[:5] and r.status == 'ok'


def test_nan_loss_stops_with_the_epoch_and_keeps_results(enc, planted, monkeypatch):
    "A loss that turns NaN in epoch 2 stops there; the clustering comes from the end of epoch 1 and is flagged."
    feats, true = planted
    real, seen = dproxy.dproxy_loss, {}
    def flaky(f, v, w, a, C, t, epochs, *args, **kw):
        loss, parts = real(f, v, w, a, C, t, epochs, *args, **kw)
        if t == 2:
            seen.setdefault('vw', (v.detach().clone(), w.detach().clone()))   # proxies as they were after epoch 1
            return loss * float('nan'), parts
        return loss, parts
    monkeypatch.setattr(dproxy, 'dproxy_loss', flaky)
    r = _fit(enc, feats, true=true, epochs=5, prune_every=5)
    assert r.status == 'nonfinite' and 'epoch 2' in r.message and 'end of epoch 1' in r.message
    assert [h['epoch'] for h in r.history if h['event'] == 'epoch'] == [0, 1]
    assert r.history[-1]['event'] == 'nonfinite' and r.row()['status'] == 'nonfinite'
    assert r.labels.shape == (60,) and np.isfinite(r.embeddings['fused']).all()
    assert {k: r.metrics[k] for k in ('nmi', 'ri', 'ari', 'acc')} == pytest.approx(evaluate(true, r.labels))      # the kept result is scored on its own labels
    # the result holds the parameters from the end of epoch 1: the proxies of the images of the failing batch match
    v, w = seen['vw']
    rows = [int(np.argmin(np.abs(r.embeddings['image'] - vi.numpy()).sum(1))) for vi in v]
    assert np.allclose(r.embeddings['proxy'][rows], w.numpy(), atol=1e-6)


def test_infinite_lr_is_caught(enc, planted):
    r = _fit(enc, planted[0], lr_proxy=float('inf'))
    assert r.status == 'nonfinite' and 'initial parameters' in r.message
    assert np.isfinite(r.embeddings['proxy']).all()


# ---------------------------------------------------------------- the method's mechanics
def test_pruning_halves_every_R_epochs_and_keeps_best(enc, planted):
    "With the nearest-centre score (score='max') each planted mode keeps its own word (chapter 04's planted run)."
    feats, true = planted
    r = _fit(enc, feats, true=true, epochs=6, prune_every=2, M=3, n_init=3, score='max')
    prunes = [h for h in r.history if h['event'] == 'prune']
    assert [(h['epoch'], h['n_before'], h['n_after']) for h in prunes] == [(1, 24, 12), (3, 12, 6), (5, 6, 3)]
    for h in prunes:
        assert min(h['scores'][w] for w in h['kept']) >= max(h['scores'][w] for w in h['dropped'])
        assert len(h['kept']) + len(h['dropped']) == h['n_before']
    assert sorted(r.params['kept_words']) == sorted(PLANTED)
    assert r.metrics['nmi'] > 0.9


def test_proposition1_on_a_run(enc, planted):
    feats, true = planted
    r = _fit(enc, feats, true=true, epochs=6, prune_every=2, M=3, n_init=3)
    for h in (h for h in r.history if h['event'] == 'prune'):
        assert h['prop1_max_excess'] <= 1e-5, h
        assert h['prop1_identity_err'] < 1e-4, h
        assert h['shift_max'] <= 2 * h['removed_mass_max'] + 1e-5


def test_proposition1_exact_identity():
    g = torch.Generator().manual_seed(3)
    C = F.normalize(torch.randn(10, 24, generator=g), dim=-1)
    px = CandidateProxies(C, init=torch.randn(200, 24, generator=g), tau=0.05)
    keep = [1, 2, 3, 7, 8]
    r = proxy_shift(px, keep)
    a = px.attention()
    assert torch.allclose(r['mass'], a[:, [0, 4, 5, 6, 9]].sum(1))
    assert r['identity_err'] < 1e-5 and r['max_excess'] <= 1e-6
    px.active = keep                                     # pruning = the same queries re-read over the kept words
    a2 = px.attention()
    assert torch.allclose(a2, a[:, keep] / a[:, keep].sum(1, keepdim=True), atol=1e-6)


def test_budget_and_pruning_sizes():
    assert candidate_budget(4, 30, 10, 32) == (32, 3)
    assert candidate_budget(2, 30, 10, 32) == (16, 3)
    assert candidate_budget(12, 20, 10, 32) == (32, 2)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert candidate_budget(4, 0, 10, 32) == (4, 0)          # no epochs: nothing to warn about
    n, sizes = 32, []
    while n > 5:
        n = len(prune_candidates(torch.rand(n), 5)); sizes.append(n)
    assert sizes == [16, 8, 5]


def test_gate_range_and_lambda():
    torch.manual_seed(0)
    fu = GatedCrossModalFusion(32, heads=4, layers=2)
    V, T, gates = fu(torch.randn(7, 1, 32) * 1e3, torch.randn(7, 1, 32) * 1e3, torch.randn(5, 32))
    for gv, gt in gates:
        assert gv.min() >= 0 and gv.max() <= 1 and gt.min() >= 0 and gt.max() <= 1
    f, lam = fu.fuse(torch.randn(100, 32), torch.randn(100, 32))
    lo, hi = torch.sigmoid(torch.tensor(-1 / fu.tau)), torch.sigmoid(torch.tensor(1 / fu.tau))
    assert lam.min() >= lo - 1e-6 and lam.max() <= hi + 1e-6


def test_determinism_and_the_protocol(enc, planted):
    feats, true = planted
    a = _fit(enc, feats, true=true, epochs=4, prune_every=2, M=3, seed=5)
    b = MultiDProxy(enc, seed=5, M=3, epochs=4, prune_every=2, batch_size=32, n_init=1, **V1).fit_task(
        Task(feats, TPL, WORDS, 3, true=true))
    assert np.array_equal(a.labels, b.labels) and a.history == b.history
    assert np.array_equal(a.embeddings['fused'], b.embeddings['fused'])


def test_same_result_shape_as_multisub(enc, planted):
    feats, true = planted
    d = _fit(enc, feats, true=true)
    m = MultiSub(enc, rounds=1, phase1_epochs=1, phase2_epochs=1, batch_size=32, n_init=1).fit_features(
        feats, TPL, WORDS[:5], 3, true)
    assert isinstance(d, ClusterResult) and d.method == 'multi-dproxy'
    assert set(m.row()) == set(d.row())
    assert {'nmi', 'ri', 'ari', 'acc'} <= set(d.metrics)


def test_encoder_is_not_changed(enc, planted):
    w0 = enc.image_projection.weight.detach().clone()
    _fit(enc, planted[0])
    assert torch.equal(enc.image_projection.weight, w0)


# ---------------------------------------------------------------- integration on a benchmark set
def test_fit_on_cars_subset_offline(cars_root, offline_encoder):
    "40 cars, colour: the registry template, the cache's 32 candidates, M = base list, a full (short) run."
    from multiclust.data import load_dataset
    ds = load_dataset('cars', root=cars_root)
    sub = ds.subset(np.random.default_rng(0).choice(len(ds), 40, replace=False), name='cars')
    r = MultiDProxy(offline_encoder, epochs=4, prune_every=2, n_init=2, batch_size=16, **V1).fit(sub, 'color')
    assert r.status == 'ok' and r.k == sub.n_clusters('color') and r.labels.shape == (40,)
    assert r.params['n_candidates_start'] == 32 and r.params['candidates_capped']
    assert [(h['n_before'], h['n_after']) for h in r.history if h['event'] == 'prune'] == [(32, 16), (16, 12)]
    assert set(r.params['kept_words']) <= set(r.words) and len(r.params['kept_words']) == 12
    assert {k: r.metrics[k] for k in ('nmi', 'ri', 'ari', 'acc')} == pytest.approx(evaluate(sub.label_ids('color'), r.labels)) and r.encoder['encoder'] == 'offline'


# ---------------------------------------------------------------- the design that learns (issue 27) and its ablations
def test_v2_defaults_start_from_the_base_words_and_prune_by_attention_mass(enc, planted):
    "Default design: start from the M base words, halve to max(K, M/2) by the attention mass each word gets."
    feats, true = planted
    w0 = enc.image_projection.weight.detach().clone()
    r = MultiDProxy(enc, epochs=6, prune_every=2, batch_size=32, n_init=3).fit_features(feats, TPL, WORDS, 3, true, M=12)
    assert torch.equal(enc.image_projection.weight, w0)                  # the projection trains as a per-fit copy
    assert r.params['n_candidates_start'] == 12 and r.params['prune_to'] == 6 and r.words == WORDS[:12]
    prunes = [h for h in r.history if h['event'] == 'prune']
    assert [(h['n_before'], h['n_after']) for h in prunes] == [(12, 6)]
    h = prunes[0]
    assert min(h['scores'][w] for w in h['kept']) >= max(h['scores'][w] for w in h['dropped'])
    assert abs(sum(h['scores'].values()) - 60) < 1e-2                    # 'mass': the attention of 60 images, rows sum to 1
    assert h['prop1_max_excess'] <= 1e-5
    rows = [h for h in r.history if h['event'] == 'epoch']
    assert rows[-1]['proj_dist'] > 0 and 'image_spread' in rows[-1]      # the projection moved, and is watched


@pytest.mark.parametrize('ablation', [dict(fusion=False), dict(user_interest=None), dict(concept_on=None), dict(dynamic=False)])
def test_ablations_run_and_switch_off_their_component(enc, planted, ablation):
    feats, true = planted
    r = MultiDProxy(enc, epochs=4, prune_every=2, batch_size=32, n_init=2, **ablation).fit_features(feats, TPL, WORDS, 3, true, M=12)
    rows = [h for h in r.history if h['event'] == 'epoch']
    assert r.status == 'ok' and r.labels.shape == (60,)
    if 'fusion' in ablation:
        assert r.embeddings['fused'].shape == (60, 64) and all(h['gate_v'] == 0 for h in rows)   # [proxy; image]
    if 'user_interest' in ablation: assert all(h['Lu'] == 0 for h in rows)
    if 'concept_on' in ablation: assert all(h['Lc'] == 0 for h in rows)
    if 'dynamic' in ablation:
        assert not [h for h in r.history if h['event'] == 'prune'] and r.params['n_candidates_final'] == 12


def test_select_loss_picks_the_lowest_relative_loss(enc, planted):
    feats, true = planted
    r = MultiDProxy(enc, epochs=3, prune_every=2, batch_size=32, n_init=2, select='loss',
                    grid={'lr_proxy': (1e-2, 1e-1)}).fit_features(feats, TPL, WORDS, 3, true, M=12)
    sel = r.params['selection']
    assert [c['value'] for c in sel['candidates']] == [1e-2, 1e-1]
    assert sel['chosen'] == min(sel['candidates'], key=lambda c: c['score'])['value']
    assert r.params['lr_proxy'] == sel['chosen'] and r.params['lr_projection'] == pytest.approx(sel['chosen'] * 1e-2)


def test_v1_is_the_first_reading():
    "MultiDProxy.V1 names the options in which the first reading differs from the default design."
    v1 = MultiDProxy.V1
    assert v1['query'] == 'image' and v1['train_projection'] is False and v1['score'] == 'mean' and v1['start'] == 'budget'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device here')
def test_trains_on_the_encoders_device(enc, planted):
    "On a GPU encoder the fit runs on the GPU (float32) and gives the CPU fit's clustering; results come back as numpy."
    import copy
    feats, true = planted
    cpu = MultiDProxy(enc, epochs=4, prune_every=2, batch_size=32, n_init=2).fit_features(feats, TPL, WORDS, 3, true, M=12)
    genc = copy.deepcopy(enc).cuda()
    dp = MultiDProxy(genc, epochs=4, prune_every=2, batch_size=32, n_init=2)
    gpu = dp.fit_features(feats.cuda(), TPL, WORDS, 3, true, M=12)
    assert gpu.params['device'].startswith('cuda') and gpu.status == 'ok'
    assert all(p.is_cuda and p.dtype == torch.float32 for p in dp.model_.parameters())
    assert isinstance(gpu.embeddings['fused'], np.ndarray)
    assert abs(gpu.metrics['nmi'] - cpu.metrics['nmi']) < 0.05, (gpu.metrics['nmi'], cpu.metrics['nmi'])
