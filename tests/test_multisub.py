"Multi-Sub (multiclust.proxy, multiclust.losses, multiclust.multisub): exact fast paths, bad input, determinism, integration."
import copy

import numpy as np
import pytest
from multiclust.metrics import evaluate
import torch

from multiclust.clip import PromptError, load_openclip, tiny_clip
from multiclust.proxy import (Proxies, PrefixCachedTextPath, TruncatedTextPath, compare_paths, make_text_path,
                              prefix_cache_supported, reference_embeddings)
from multiclust.core import ClusterResult, kmeans
from multiclust.multisub import MultiSub

TPL = 'a fruit with the color of *'
WORDS = ['red', 'yellow', 'green', 'dark blue', 'purple']


pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache


@pytest.fixture(scope='module')
def clip_small():
    "A random open_clip tower a bit larger than tiny (4 layers, width 64, 4 heads) so the attention has real heads."
    cfg = dict(embed_dim=48, vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
               text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=4))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return load_openclip(cfg, pretrained=None)


def _proxies(enc, n=24, seed=0, dtype=torch.float32):
    Z = reference_embeddings(enc, WORDS)
    return Proxies(Z, n, init_std=2.0, generator=torch.Generator().manual_seed(seed))().detach().to(dtype)


# ---------------------------------------------------------------- fast path == plain path
@pytest.mark.parametrize('template', [TPL, '* fruit', 'a close-up photo of a * on a wooden kitchen table'])
@pytest.mark.parametrize('mode', ['prefix-cache', 'truncate'])
def test_openclip_fast_path_equals_plain_fp32(clip_small, template, mode):
    r = compare_paths(clip_small, template, _proxies(clip_small), fast=mode)
    assert r['fast'] == mode
    assert r['max_abs_diff'] < 1e-5, r
    assert r['max_rel_grad_diff'] < 1e-5, r


@pytest.mark.parametrize('mode', ['prefix-cache', 'truncate'])
def test_openclip_fast_path_equals_plain_fp64(clip_small, mode):
    enc = copy.deepcopy(clip_small).double()
    r = compare_paths(enc, TPL, _proxies(enc, dtype=torch.float64), fast=mode)
    assert r['max_abs_diff'] < 1e-10 and r['max_rel_grad_diff'] < 1e-10, r


def test_fast_is_prefix_cache_for_openclip(clip_small):
    p = make_text_path(clip_small, TPL)
    assert isinstance(p, PrefixCachedTextPath) and p.P == 7 and p.ids.shape == (1, 9) and p.eot == 1
    with torch.no_grad():                                            # a real word at `*` = encode_text of the spelt-out prompt
        red = clip_small.token_embeddings(clip_small._word_ids('red')[None])[0]
        assert torch.allclose(p(red), clip_small.encode_text([TPL.replace('*', 'red')]), atol=1e-5)


def test_offline_fast_path_is_truncation_and_exact(offline_encoder):
    assert prefix_cache_supported(offline_encoder) is not None       # bidirectional MiniLM: no prefix cache
    with pytest.raises(NotImplementedError, match='prefix cache unavailable'):
        PrefixCachedTextPath(offline_encoder, TPL)
    p = make_text_path(offline_encoder, TPL)
    assert isinstance(p, TruncatedTextPath) and p.kind == 'truncate'
    r = compare_paths(offline_encoder, TPL, _proxies(offline_encoder, n=8), fast='fast')
    assert r['max_abs_diff'] < 1e-5 and r['max_rel_grad_diff'] < 1e-5, r
    enc = copy.deepcopy(offline_encoder).double()
    r = compare_paths(enc, TPL, _proxies(enc, n=4, dtype=torch.float64), fast='fast')
    assert r['max_abs_diff'] < 1e-10 and r['max_rel_grad_diff'] < 1e-10, r


def test_offline_padding_truncation_is_exact(offline_encoder):
    "Cutting padding columns of a padded batch changes nothing (masked keys, masked mean pooling)."
    from multiclust.proxy import _n_real_tokens
    enc = offline_encoder
    ids = enc.tokenize([TPL, 'a fruit with the color of * seen in a very long and wordy prompt that pads the first row'])
    row = ids[:1]
    n = _n_real_tokens(enc, row)
    assert n < ids.shape[1]
    w = _proxies(enc, n=1).requires_grad_(True)
    outs, grads = [], []
    for x in (row, row[:, :n]):
        e = enc.token_embeddings(x).detach().clone()
        e = torch.cat([e[:, :7], w[:, None], e[:, 8:]], 1)
        o = enc.encode_tokens(x, e)
        g, = torch.autograd.grad(o.sin().sum(), w)
        outs.append(o.detach()); grads.append(g)
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    assert (grads[0] - grads[1]).abs().max() / grads[0].abs().max() < 1e-5


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope='module')
def enc():
    return tiny_clip()


@pytest.fixture(scope='module')
def feats(enc):
    return torch.randn(30, enc.feature_dim, generator=torch.Generator().manual_seed(0))


def _ms(enc, **kw):
    return MultiSub(enc, **{**dict(rounds=1, phase1_epochs=1, phase2_epochs=1, batch_size=16, n_init=1), **kw})


def test_bad_k(enc, feats):
    with pytest.raises(ValueError, match='at least 2 clusters'): _ms(enc).fit_features(feats, TPL, WORDS, 1)
    with pytest.raises(ValueError, match=r'larger than the number of images \(30\)'): _ms(enc).fit_features(feats, TPL, WORDS, 31)


def test_bad_words(enc, feats):
    with pytest.raises(PromptError, match='empty reference word list'): _ms(enc).fit_features(feats, TPL, [], 3)
    with pytest.raises(PromptError, match=r"'\\x00'"): _ms(enc).fit_features(feats, TPL, ['red', '\x00'], 3)
    with pytest.raises(PromptError, match="'  '"): _ms(enc).fit_features(feats, TPL, ['red', '  '], 3)
    with pytest.raises(PromptError, match="exactly one"): _ms(enc).fit_features(feats, 'a fruit', WORDS, 3)


def test_bad_features(enc, feats):
    f = feats.clone(); f[4, 0] = float('nan')
    with pytest.raises(ValueError, match=r'rows \[4\]'): _ms(enc).fit_features(f, TPL, WORDS, 3)
    with pytest.raises(ValueError, match='features must be'): _ms(enc).fit_features(feats[:, :5], TPL, WORDS, 3)


def test_nonfinite_loss_stops_and_keeps_state(enc, feats):
    r = _ms(enc, rounds=2, lr_latent=float('inf')).fit_features(feats, TPL, WORDS, 3)
    assert r.status == 'nonfinite'
    assert 'round 0, phase I, epoch 0' in r.message
    assert r.history[-1]['event'] == 'nonfinite'
    assert np.isfinite(r.embeddings['token+image']).all() and len(r.labels) == 30


def test_bad_concept_and_k_on_dataset(tmp_path):
    from multiclust.core import DataError
    from multiclust.data import make_synthetic
    ds = make_synthetic(root=tmp_path, n=12, size=32)
    enc = tiny_clip()
    with pytest.raises(DataError, match=r"no concept 'flavour'.*'color'"): _ms(enc).fit(ds, 'flavour', words=WORDS)
    with pytest.raises(ValueError, match='at least 2 clusters'): _ms(enc).fit(ds, 'color', k=1, words=WORDS)
    with pytest.raises(ValueError, match=r'larger than the number of images \(12\)'): _ms(enc).fit(ds, 'color', k=13, words=WORDS)
    with pytest.raises(PromptError, match=r"'\\x00'"): _ms(enc).fit(ds, 'color', words=['red', '\x00'])
    r = _ms(enc).fit(ds, 'color', words=WORDS, cache_dir=tmp_path / 'feat')
    assert r.k == ds.n_clusters('color') and r.dataset == ds.name and r.word_source == 'user'
    assert set(r.metrics) >= {'nmi', 'ri', 'ari', 'acc', 'pseudo_nmi', 'pseudo_ri'}


# ---------------------------------------------------------------- determinism, no shared state
def test_deterministic_and_encoder_untouched(enc, feats):
    w0 = copy.deepcopy(enc.state_dict())
    kw = dict(rounds=2, phase1_epochs=2, phase2_epochs=2, n_init=2, threads=1)
    a = _ms(enc, seed=5, **kw).fit_features(feats, TPL, WORDS, 3)
    b = _ms(enc, seed=5, **kw).fit_features(feats, TPL, WORDS, 3)
    assert np.array_equal(a.labels, b.labels)
    for name in a.embeddings: assert np.array_equal(a.embeddings[name], b.embeddings[name]), name
    assert [h.get('loss') for h in a.history] == [h.get('loss') for h in b.history]
    w1 = enc.state_dict()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)                # no fit changes the shared encoder
    assert a.params['threads_used'] == 1 and torch.get_num_threads() != 0


def test_result_fields(enc, feats):
    true = np.arange(30) % 3
    r = _ms(enc).fit_features(feats, TPL, WORDS, 3, true_labels=true, dataset='random', concept='color')
    assert isinstance(r, ClusterResult) and r.method == 'multi-sub' and r.k == 3
    assert {'proxy_weights', 'proxy_token', 'proxy_text', 'prompt_text', 'image', 'token+image', 'prompt+image',
            'pseudo_labels'} <= set(r.embeddings)
    assert r.encoder['encoder'] == 'tiny' and r.words == WORDS and r.runtime_s > 0
    row = r.row()
    assert row['method'] == 'multi-sub' and row['n_images'] == 30 and 'nmi' in row and row['status'] == 'ok'
    assert np.allclose(r.embeddings['proxy_weights'].sum(1), 1, atol=1e-5)


def test_kmeans_separates_blobs():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, .05, (8, 3)) for c in (0, 1, 2)])
    lab = kmeans(X, 3, seed=0, n_init=2)
    assert all(len(set(lab[i:i + 8])) == 1 for i in (0, 8, 16)) and len(set(lab)) == 3


# ---------------------------------------------------------------- real data (skips without it)
def test_multisub_on_cars_subset(cars_root, offline_encoder, tmp_path):
    from multiclust.data import load_dataset
    ds = load_dataset('cars', root=cars_root)
    sub = ds.subset(np.random.default_rng(0).choice(len(ds), 24, replace=False))
    r = MultiSub(offline_encoder, rounds=1, phase1_epochs=1, phase2_epochs=1, n_init=2, text_embeddings=False).fit(
        sub, 'type', cache_dir=tmp_path)
    assert r.status == 'ok' and r.word_source in ('authored', 'llm') and len(r.words) >= 2
    assert r.labels.shape == (24,) and {k: r.metrics[k] for k in ('nmi', 'ri', 'ari', 'acc')} == pytest.approx(evaluate(sub.label_ids('type'), r.labels))
    assert r.params['template'] == 'a car with the type of *' and r.params['text_path_kind'] == 'truncate'


# ---------------------------------------------------------------- Phase I: row-wise (sparse) proxy update == dense
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_row_adagrad_equals_dense_adagrad(dtype):
    from multiclust.proxy import RowAdagrad
    g = torch.Generator().manual_seed(0)
    hp = dict(lr=0.3, lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-8)
    a = torch.nn.Parameter(torch.randn(50, 7, generator=g, dtype=dtype)); b = torch.nn.Parameter(a.detach().clone())
    other_a = torch.nn.Parameter(torch.randn(3, dtype=dtype)); other_b = torch.nn.Parameter(other_a.detach().clone())
    opt_a = torch.optim.Adagrad([{'params': [a]}, {'params': [other_a], 'lr': 0.01}], **hp)
    opt_b = torch.optim.Adagrad([{'params': [b]}, {'params': [other_b], 'lr': 0.01}], **hp)
    rows = RowAdagrad(opt_b, b)
    for step in range(25):
        idx = torch.randperm(50, generator=g)[:int(torch.randint(1, 20, (), generator=g))]
        grad = torch.randn(len(idx), 7, generator=g, dtype=dtype) * 10 ** float(torch.randint(-3, 3, (), generator=g))
        go = torch.randn(3, generator=g, dtype=dtype)
        opt_a.zero_grad(set_to_none=True); (a[idx] * grad).sum().backward(); other_a.grad = go.clone(); opt_a.step()
        opt_b.zero_grad(set_to_none=True); other_b.grad = go.clone(); opt_b.step(); rows.step(idx, grad)
    assert torch.equal(a, b) and torch.equal(other_a, other_b)
    assert torch.equal(opt_a.state[a]['sum'], opt_b.state[b]['sum']) and torch.equal(opt_a.state[a]['step'], opt_b.state[b]['step'])
    assert b.grad is None


@pytest.mark.parametrize('latent', ['token', 'logits'])
def test_sparse_proxies_fit_equals_dense_fit(enc, feats, latent):
    true = np.arange(30) % 3
    kw = dict(rounds=2, phase1_epochs=2, phase2_epochs=1, batch_size=16, n_init=2, threads=1, init_std=0.3,
              latent=latent, seed=1)
    d = _ms(enc, sparse_proxies=False, **kw).fit_features(feats, TPL, WORDS, 3, true_labels=true)
    ms = _ms(enc, sparse_proxies=True, **kw)
    r = ms.fit_features(feats, TPL, WORDS, 3, true_labels=true)
    assert (d.params['proxy_update'], r.params['proxy_update']) == ('dense', 'rows')
    assert r.status == d.status == 'ok'
    assert np.array_equal(r.labels, d.labels)
    assert r.history == d.history and any(h['phase'] == 'I' for h in r.history)
    assert r.embeddings.keys() == d.embeddings.keys()
    for name in d.embeddings: assert np.array_equal(r.embeddings[name], d.embeddings[name]), name
    assert r.metrics == d.metrics
    assert ms.proxies_.p.grad is None                                  # no (N, d) gradient was made
    assert _ms(enc, threads=1).fit_features(feats, TPL, WORDS, 3).params['proxy_update'] == 'rows'   # 'auto' default


@pytest.mark.parametrize('kw', [dict(optimizer='adam'), dict(optimizer='sgd'), dict(weight_decay=1e-3),
                                dict(lr_latent=float('inf'))])
def test_sparse_proxies_refused_where_not_exact(enc, feats, kw):
    with pytest.raises(ValueError, match='sparse_proxies=True needs'): _ms(enc, sparse_proxies=True, **kw)
    assert _ms(enc, threads=1, **kw).fit_features(feats, TPL, WORDS, 3).params['proxy_update'] == 'dense'   # 'auto'


def test_sparse_proxies_bad_value(enc):
    with pytest.raises(ValueError, match="'auto', True or False"): _ms(enc, sparse_proxies='sparse')


# ---------------------------------------------------------------- the paper's protocol (chapter 03a / 04c)
@pytest.mark.parametrize('cluster_on', list(MultiSub.CLUSTER_ON))
def test_every_cluster_on_runs(enc, feats, cluster_on):
    r = _ms(enc, cluster_on=cluster_on, text_embeddings=False).fit_features(feats, TPL, WORDS, 3)
    parts = MultiSub.CLUSTER_ON[cluster_on]
    assert r.labels.shape == (30,) and r.status == 'ok'
    assert r.embeddings[cluster_on].shape[1] == sum(r.embeddings[p].shape[1] for p in parts)
    if len(parts) == 1: assert np.allclose(np.linalg.norm(r.embeddings[cluster_on], axis=1), 1, atol=1e-5)


def test_balanced_halves_have_equal_variance():
    from multiclust.multisub import balanced_embedding
    from multiclust.losses import joint_embedding
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 5, generator=g) * .01 + 1            # a part that barely spreads (like the proxies)
    B = torch.randn(40, 7, generator=g)
    var = lambda X: float(((X - X.mean(0)) ** 2).sum(1).mean())
    E = balanced_embedding(A, B)
    assert abs(var(E[:, :5]) - 1) < 1e-4 and abs(var(E[:, 5:]) - 1) < 1e-4
    J = joint_embedding(A, B)
    assert var(J[:, :5]) < .01 * var(J[:, 5:])                  # plainly joined, the first part is drowned


def test_relative_loss_scores_a_collapse_as_chance():
    from multiclust.diagnostics import relative_alignment_loss
    g = torch.Generator().manual_seed(0)
    V = torch.randn(50, 8, generator=g)
    one = V[:1].expand(50, -1)
    assert abs(relative_alignment_loss(one + 1e-4 * V, one) - 1) < 1e-3      # one prompt for everyone: chance
    assert relative_alignment_loss(V, V + .1 * torch.randn(50, 8, generator=g)) < .05


def test_choose_candidate_never_picks_a_collapse():
    from multiclust.multisub import choose_candidate, is_collapsed
    c = [dict(lr=.1, score=.001, status='ok', collapsed=is_collapsed(1, .5, .9)),
         dict(lr=.05, score=.002, status='ok', collapsed=is_collapsed(4, .01, .9)),
         dict(lr=.01, score=.3, status='ok', collapsed=''), dict(lr=.02, score=.2, status='nonfinite', collapsed=''),
         dict(lr=.03, score=.5, status='ok', collapsed='')]
    assert c[0]['collapsed'] and c[1]['collapsed']
    assert choose_candidate(c)['lr'] == .01
    assert choose_candidate(c[:2]) is None


def test_select_loss_records_every_candidate_and_uses_no_labels(enc, feats):
    grid = dict(lr=[5e-2, 1e-2], weight_decay=[1e-4, 1e-5])
    kw = dict(MultiSub.QUICK, rounds=1, phase1_epochs=2, phase2_epochs=1, batch_size=16, n_init=1, select='loss', grid=grid)
    true = np.arange(30) % 3
    r = MultiSub(enc, **kw).fit_features(feats, TPL, WORDS, 3, true_labels=true)
    s = r.params['selection']
    assert len(s['candidates']) == 4 and s['n_images'] == 30 and r.params['select'] == 'loss'
    ok = [c for c in s['candidates'] if not c['collapsed']]
    if ok:
        best = min(ok, key=lambda c: c['score'])
        assert s['chosen'] == dict(lr=best['lr'], weight_decay=best['weight_decay'])
        assert r.params['lr_latent'] == best['lr'] and r.params['lr_proj1'] == best['lr'] * 1e-2
    r2 = MultiSub(enc, **kw).fit_features(feats, TPL, WORDS, 3, true_labels=np.zeros(30, int))    # other labels
    strip = lambda sel: [{k: v for k, v in c.items() if k != 'runtime_s'} for c in sel['candidates']]
    assert strip(r2.params['selection']) == strip(s) and r2.params['selection']['chosen'] == s['chosen']
    assert np.array_equal(r2.labels, r.labels)                                        # labels change nothing
    sub = MultiSub(enc, **kw, select_subset=20).fit_features(feats, TPL, WORDS, 3)
    assert sub.params['selection']['n_images'] == 20 and len(sub.labels) == 30


def test_protocol_options(enc, feats):
    r = _ms(enc, **{**MultiSub.QUICK, 'rounds': 1, 'phase1_epochs': 10, 'phase2_epochs': 1, 'batch_size': 16,
                    'patience': 1, 'tol': 0.99, 'diagnostics': True}).fit_features(feats, TPL, WORDS, 3)
    rnd = [h for h in r.history if h['phase'] == 'round']
    assert rnd[0]['phase1_epochs_run'] == 2                       # settled pseudo-labels stop Phase I early
    ep = [h for h in r.history if h['phase'] == 'I']
    assert {'entropy', 'n_pseudo_clusters', 'image_spread', 'image_erank', 'proj_dist'} <= set(ep[0])
    assert any(h.get('event') == 'restored' for h in r.history)   # keep_best
    kept = min(h['relative_loss'] for h in r.history if 'relative_loss' in h and h.get('phase') in ('I', 'II'))
    assert kept <= r.params['score'] <= kept / (1 - 1e-3) + 1e-9    # the best state (gains under 0.1 % do not count)
    drift = lambda a: [h for h in _ms(enc, optimizer='adam', lr_latent=5e-2, lr_proj1=5e-2, proj_anchor=a, rounds=1,
                                      phase1_epochs=3, phase2_epochs=0).fit_features(feats, TPL, WORDS, 3).history
                       if h['phase'] == 'I'][-1]['proj_dist']
    assert drift(10.0) < drift(0.0)                               # the anchor holds the projection
    for bad, msg in [(dict(select='nmi'), "select must be None or one of"),
                     (dict(halving=[dict(after_epochs=0, keep=2)]), 'halving rung'),
                     (dict(halving=[dict(after_rounds=1, after_epochs=2, keep=2)]), 'halving rung'),
                     (dict(halving=[dict(after_rounds=1)]), 'halving rung'), (dict(patience=0), 'patience'),
                     (dict(tol=1.0), 'tol'), (dict(proj_anchor=-1), 'proj_anchor'),
                     (dict(select='loss', grid=dict(beta=[.9])), 'grid must map')]:
        with pytest.raises(ValueError, match=msg): MultiSub(enc, **bad)


def test_phase2_stops_by_the_relative_loss(enc, feats):
    "Phase II measures the relative loss after each epoch and stops after `patience` epochs without a 0.1 % gain."
    kw = {**MultiSub.QUICK, 'rounds': 1, 'phase1_epochs': 3, 'phase2_epochs': 40, 'batch_size': 16, 'patience': 2}
    r = _ms(enc, **kw).fit_features(feats, TPL, WORDS, 3)
    p2 = [h for h in r.history if h['phase'] == 'II']
    assert all('relative_loss' in h for h in p2)
    assert len(p2) < 40, len(p2)                                  # stopped early
    rel = [h['relative_loss'] for h in p2]
    ref = min([h['relative_loss'] for h in r.history if h['phase'] == 'I' and 'relative_loss' in h])
    best = min(rel[:-2] + [ref])                                  # the last 2 epochs did not beat what came before
    assert all(x >= best * (1 - 1e-3) for x in rel[-2:])
    r0 = _ms(enc, **{**kw, 'patience': None}).fit_features(feats, TPL, WORDS, 3)
    assert len([h for h in r0.history if h['phase'] == 'II']) == 40   # without patience: the whole budget


@pytest.mark.parametrize('basis', ['token', 'text', 'prompt'])
def test_bases_train_without_the_tower(enc, feats, basis):
    "A text or prompt basis never runs the text tower in Phase I (its proxies are text-space vectors); the token basis does."
    calls = []
    orig = enc.encode_tokens
    enc.encode_tokens = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        r = _ms(enc, basis=basis, phase1_epochs=2, text_path='plain', text_embeddings=False).fit_features(feats, TPL, WORDS, 3)
    finally:
        del enc.encode_tokens
    if basis == 'token':
        assert r.params['text_path_kind'] == 'plain' and len(calls) > 4     # the plain path: the tower every batch
    else:
        assert r.params['text_path_kind'] == f'direct ({basis} basis)'
        assert len(calls) <= 2                                    # the two tables (text, prompt), once per fit


# ---------------------------------------------------------------- the cheaper selection (issue 23): exact shortcuts
SEL = dict(MultiSub.QUICK, rounds=2, phase1_epochs=4, phase2_epochs=2, batch_size=16, n_init=1, threads=1,
           grid=dict(lr=[5e-1, 1e-1, 1e-2], weight_decay=[1e-4, 1e-5]))   # tiny CLIP: only lr 5e-1 / wd 1e-5 does not collapse
_same_emb = lambda a, b: a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)


def test_interleaved_runs_compute_what_each_computes_alone(enc, feats):
    "Two fits advanced epoch by epoch in turn (a halving selection's schedule) equal the same fits run alone, bit for bit."
    from multiclust.multisub import _Run
    true = np.arange(30) % 3
    mss = [MultiSub(enc, **{**SEL, 'lr_latent': lr, 'seed': s}) for lr, s in ((5e-2, 0), (1e-2, 3))]
    alone = [m.fit_features(feats, TPL, WORDS, 3, true_labels=true) for m in mss]
    runs = [_Run(m, feats, TPL, WORDS, 3, true) for m in mss]
    while not all(r.done for r in runs):
        for r in runs: r.advance(lambda i: True)                      # one step each, in turn
    for r, a in zip(runs, alone):
        b = r.finish()
        assert np.array_equal(a.labels, b.labels) and _same_emb(a.embeddings, b.embeddings)
        assert a.history == b.history and a.params == b.params and a.metrics == b.metrics


def test_halving_that_keeps_everyone_is_the_exhaustive_selection(enc, feats):
    "Rungs that keep all 6 candidates: the same scores, the same choice, and the winner's own run = the refit."
    true = np.arange(30) % 3
    ex = MultiSub(enc, **SEL, select='exhaustive').fit_features(feats, TPL, WORDS, 3, true_labels=true)
    hv = MultiSub(enc, **SEL, select='halving', halving=[dict(after_epochs=1, keep=6), dict(after_rounds=1, keep=6)]
                  ).fit_features(feats, TPL, WORDS, 3, true_labels=true)
    strip = lambda s: [{k: v for k, v in c.items() if k not in ('runtime_s', 'trajectory')} for c in s['candidates']]
    assert strip(hv.params['selection']) == strip(ex.params['selection'])
    ep1 = [[t[3] for t in c['trajectory'] if t[1] == 'epoch' and t[0] == 1][0] for c in ex.params['selection']['candidates']]
    rung = hv.params['selection']['rungs'][0]                     # the rung saw what the exhaustive run passed through
    for s_, c_, e in zip(rung['scores'], rung['collapsed'], ep1): assert (s_ is None) if c_ else s_ == e
    assert hv.params['selection']['chosen'] == ex.params['selection']['chosen']
    assert ex.params['selection']['refit'] and not hv.params['selection']['refit']
    assert np.array_equal(hv.labels, ex.labels) and _same_emb(hv.embeddings, ex.embeddings)
    assert hv.params['score'] == ex.params['score'] and hv.metrics == ex.metrics
    # the refit ran with per-epoch diagnostics: the same training, more keys in its history
    drop = lambda h: [{k: v for k, v in e.items() if k in ('round', 'phase', 'epoch', 'loss', 'relative_loss', 'event')}
                      for e in h]
    assert drop(hv.history) == [e for e in drop(ex.history)]


def test_winner_reuse_equals_its_refit_bit_for_bit(enc, feats):
    "N <= select_subset: the default halving returns the winner's own run; a plain fit of the chosen config equals it."
    true = np.arange(30) % 3
    ms = MultiSub(enc, **SEL, select='halving', halving=[dict(after_epochs=2, keep=3), dict(after_rounds=1, keep=1)])
    r = ms.fit_features(feats, TPL, WORDS, 3, true_labels=true, dataset='d', concept='c')
    s = r.params['selection']
    assert not s['refit'] and s['chosen'] is not None and r.dataset == 'd' and r.concept == 'c'
    assert [g['n_in'] for g in s['rungs']] == [6, 3] and sum(c['status'] == 'dropped' for c in s['candidates']) == 5
    lr = s['chosen']['lr']
    again = MultiSub(enc, **{**SEL, 'lr_latent': lr, 'lr_proj1': lr * 1e-2, 'lr_proj2': lr * 1e-2,
                             'weight_decay': s['chosen']['weight_decay']}).fit_features(feats, TPL, WORDS, 3, true_labels=true, dataset='d', concept='c')
    assert np.array_equal(r.labels, again.labels) and _same_emb(r.embeddings, again.embeddings)
    assert r.history == again.history and r.metrics == again.metrics and r.params['score'] == again.params['score']
    assert {k: v for k, v in r.params.items() if k not in ('select', 'selection', 'sparse_proxies', 'halving')} == \
        {k: v for k, v in again.params.items() if k not in ('select', 'selection', 'sparse_proxies', 'halving')}
    # every survivor's score is the score of the same candidate in the exhaustive selection
    ex = MultiSub(enc, **SEL, select='exhaustive').fit_features(feats, TPL, WORDS, 3)
    for a, b in zip(s['candidates'], ex.params['selection']['candidates']):
        assert (a['lr'], a['weight_decay']) == (b['lr'], b['weight_decay'])
        if a['status'] != 'dropped': assert a['score'] == b['score'] and a['collapsed'] == b['collapsed']


def test_halving_on_a_subset_refits_on_all_images(enc, feats):
    r = MultiSub(enc, **SEL, select='halving', select_subset=20).fit_features(feats, TPL, WORDS, 3)
    s = r.params['selection']
    assert s['n_images'] == 20 and s['refit'] and len(r.labels) == 30 and r.params['n_images'] == 30
    assert s['rungs'][0]['after_epochs'] == 2 and len(s['rungs'][0]['scores']) == 6
