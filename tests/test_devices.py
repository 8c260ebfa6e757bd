"""The device rule (chapter 00, issue 22): every method runs where the encoder's parameters are.

Without a GPU: every entry of METHODS, `cluster()` and a short full-mode Multi-Sub fit run with the encoder's
parameters treated as living on a second device (`multiclust.devcheck`, chapter 00d): an op that would mix devices,
or `.numpy()` of a device tensor, fails. With a GPU (skipped otherwise): quick fits on CUDA agree with the CPU."""
import subprocess, sys, time

import numpy as np
import pytest
import torch

from multiclust.clip import tiny_clip, resolve_device, load_encoder, hub_reachable, HUB_TIMEOUT_S, _auto
from multiclust.data import load_dataset
from multiclust.features import extract_features
from multiclust.devcheck import on_second_device, DeviceMixError, SECOND_DEVICE
from multiclust.methods import METHODS, run_method
from multiclust.multisub import MultiSub
from multiclust.metrics import nmi

pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache

TRAINED = {'multimap', 'multisub', 'multisub-wordnet', 'multisub-randwords', 'multidproxy'}
WORDS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange']


@pytest.fixture(scope='module')
def enc():
    return tiny_clip()


@pytest.fixture
def syn():
    return load_dataset('synthetic').subset(range(40))


@pytest.mark.parametrize('name', list(METHODS))
def test_every_method_runs_on_the_encoders_device(enc, syn, name):
    "Features from the cache (host) are moved once; nothing mixes devices; trained methods step their optimiser there."
    if name == 'multidproxy': pytest.importorskip('multiclust.dproxy')
    feats = extract_features(enc, syn, progress=False)            # on the CPU, as the cache gives them
    with on_second_device(enc) as mode:
        r = run_method(name, enc, syn, 'color', seed=0, feats=feats, quick=True)
    assert r.labels.shape == (len(syn),) and np.isfinite(r.metrics['nmi'])
    if name in TRAINED:                                           # the training itself ran on the device
        assert mode.updates['device'] > 0 and mode.updates['host'] == 0, mode.updates
    assert r.row()['device'] == str(SECOND_DEVICE) and r.row()['dtype'] == 'float32'   # every row says where it ran


def test_multisub_full_mode_diagnostics_and_bases_on_the_device(enc, syn):
    "Full mode's selection (a small grid), the per-epoch diagnostics with labels, and a text basis."
    feats, true = extract_features(enc, syn, progress=False), syn.label_ids('color')
    full = {**MultiSub.FULL, 'rounds': 1, 'phase1_epochs': 2, 'phase2_epochs': 1, 'select_subset': 24,
            'train_subset': 30, 'grid': {'lr': (5e-2, 1e-2), 'weight_decay': (1e-5,)}}   # the extension runs too
    with on_second_device(enc) as mode:
        r = MultiSub(enc, **full).fit_features(feats, 'a shape with the color of *', WORDS, 6, true)
        MultiSub(enc, rounds=2, phase1_epochs=2, phase2_epochs=1, diagnostics=True, eval_rounds=True, keep_best=True,
                 patience=1, basis='prompt').fit_features(feats, 'a shape with the color of *', WORDS, 6, true)
    assert len(r.params['selection']['candidates']) == 2 and mode.updates['host'] == 0
    assert r.params['n_trained'] == 30 < len(syn) == len(r.labels)


def test_cluster_on_the_device(enc, syn, tmp_path):
    from multiclust.cluster import cluster
    imgs = [syn.load_image(i) for i in range(20)]
    with on_second_device(enc):
        a = cluster(imgs, by='color', k=3, encoder=enc, words=WORDS, quick=True, cache_dir=tmp_path)
        b = cluster(imgs, by='color', encoder=enc, words=WORDS, quick=True, cache_dir=tmp_path)     # K by the rule
        c = cluster(imgs, by='color', k=3, encoder=enc, words=WORDS, method='zeroshot-gpt', cache_dir=tmp_path)
    assert len(a.labels_) == len(b.labels_) == len(c.labels_) == 20
    assert a.info_['encoder']['device'] == str(SECOND_DEVICE)       # clusters.json says where it ran


def test_the_check_fails_where_the_rule_is_broken(enc, syn):
    "The check is not vacuous: a feature tensor left on the host, and numpy of a device tensor, both fail."
    from multiclust.proxy import image_embeddings
    feats = extract_features(enc, syn, progress=False)
    with on_second_device(enc):
        with pytest.raises(DeviceMixError, match='linear'): enc.project(feats)
        with pytest.raises(DeviceMixError, match='numpy'): image_embeddings(enc, feats).numpy()


def test_rng_forks_name_their_devices(enc, syn, monkeypatch):
    "A fit forks the RNG of the CPU and its own device only, never every visible GPU's."
    seen, real = [], torch.random.fork_rng
    def spy(*a, **kw):
        seen.append(kw.get('devices', a[0] if a else None))
        return real(*a, **kw)
    monkeypatch.setattr(torch.random, 'fork_rng', spy)
    feats = extract_features(enc, syn, progress=False)
    for name in ('multisub', 'multimap') + (('multidproxy',) if _has_dproxy() else ()):
        run_method(name, enc, syn, 'color', seed=0, feats=feats, quick=True)
    assert seen and all(d is not None for d in seen), seen


def _has_dproxy():
    try: import multiclust.dproxy  # noqa: F401
    except ImportError: return False
    return True


def test_bad_devices_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'gpu'.*this machine has: cpu"): resolve_device('gpu')
    with pytest.raises(ValueError, match='no GPU 9|sees no CUDA GPU'): resolve_device('cuda:9')
    with pytest.raises(ValueError, match="device 'cuda:9'"): load_encoder('tiny', device='cuda:9')
    from multiclust.cluster import Clusterer
    with pytest.raises(ValueError, match="device 'cuda:9'"): Clusterer('color', 3, device='cuda:9')
    (tmp_path / 'imgs').mkdir()
    t0 = time.time()
    cli = [sys.executable, '-c', 'import sys; from multiclust.cli import main; sys.exit(main())']
    p = subprocess.run([*cli, 'cluster', str(tmp_path / 'imgs'), '--by', 'color',
                        '--device', 'cuda:9', '--encoder', 'tiny'], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0 and "cuda:9" in (p.stdout + p.stderr) and 'Traceback' not in p.stderr, p.stderr
    p = subprocess.run([*cli, 'demo', '--device', 'tpu'], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode != 0 and "--device" in (p.stdout + p.stderr) and 'Traceback' not in p.stderr, p.stderr
    assert time.time() - t0 < 120


def test_auto_decides_offline_fast_without_network(monkeypatch):
    "No network (a closed port stands in for the hub): the bounded check answers well inside its timeout."
    monkeypatch.setenv('HF_HUB_OFFLINE', '0'); monkeypatch.setenv('HF_ENDPOINT', 'https://127.0.0.1:9')
    monkeypatch.delenv('HTTPS_PROXY', raising=False); monkeypatch.delenv('https_proxy', raising=False)
    t0 = time.perf_counter(); ok, why = hub_reachable(); dt = time.perf_counter() - t0
    assert ok is False and '127.0.0.1' in why and dt < HUB_TIMEOUT_S + 0.5, (why, dt)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert hub_reachable() == (False, 'HF_HUB_OFFLINE=1')


def test_auto_downloads_when_online_and_falls_back_when_not(monkeypatch):
    "Weights missing: auto asks open_clip to download when the hub answers, else takes the offline pair; the note says why."
    import multiclust.clip as clip
    tiny, calls = tiny_clip(), []
    def fake(model_name, pretrained, download=None, device='cpu', **kw):
        calls.append(download)
        if not download: raise clip.WeightsUnavailable('not cached')
        return tiny
    monkeypatch.setattr(clip, 'load_openclip', fake)
    monkeypatch.setattr(clip, 'hub_reachable', lambda: (True, 'stub answers'))
    e = _auto(device='cpu')
    assert calls == [False, True] and e is tiny and 'downloaded' in e.note and e.describe()['encoder_note'] == e.note
    class Off:                                             # the offline pair, without loading it
        name, note = 'offline', ''
        device = torch.device('cpu')
        def __init__(self, device=None): pass
    monkeypatch.setattr(clip, 'hub_reachable', lambda: (False, 'no route'))
    monkeypatch.setattr(clip, 'OfflineEncoder', Off)
    e = _auto(device='cpu')
    assert isinstance(e, Off) and 'no route' in e.note and 'offline' in e.note


def test_proxies_stay_float32_beside_a_half_precision_tower(syn):
    "The text tower in bfloat16 (as on a GPU in half precision): proxies, projection and optimiser state stay float32."
    e = tiny_clip()
    for m in (e.model.transformer, e.model.token_embedding, e.model.ln_final): m.to(torch.bfloat16)
    for p in (e.model.positional_embedding, e.model.text_projection): p.data = p.data.to(torch.bfloat16)
    feats = extract_features(e, syn, progress=False)
    ms = MultiSub(e, rounds=1, phase1_epochs=2, phase2_epochs=1, optimizer='adam', proj_anchor=1e-2)
    r = ms.fit_features(feats, 'a shape with the color of *', WORDS, 6)
    assert ms.proxies_.p.dtype == torch.float32 and ms.proxies_.Z.dtype == torch.float32
    assert next(ms.projection_.parameters()).dtype == torch.float32 and r.status == 'ok'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA GPU on this machine (the CPU check above covers the rule)')
@pytest.mark.parametrize('name', ['kmeans', 'zeroshot-gpt', 'multimap', 'multisub', 'multidproxy'])
def test_cuda_quick_fits_agree_with_the_cpu(syn, name):
    "On a real GPU: the same labels as on the CPU up to a permutation, or NMI >= .99 between the two."
    if name == 'multidproxy': pytest.importorskip('multiclust.dproxy')
    labels = {}
    for dev in ('cpu', 'cuda'):
        e = tiny_clip(device=dev)
        r = run_method(name, e, syn, 'color', seed=0, quick=True)
        assert r.row()['device'].startswith(dev)
        labels[dev] = r.labels
    assert nmi(labels['cpu'], labels['cuda']) >= .99, (labels['cpu'], labels['cuda'])


def test_cluster_says_what_the_offline_encoder_cannot_see_before_it_works(tmp_path, monkeypatch, capsys):
    "When auto falls back to the offline pair, `multiclust cluster` says so (with the numbers) before any work."
    from PIL import Image
    import importlib
    cl = importlib.import_module('multiclust.cluster')       # (the package's `cluster` is the function)
    from multiclust.cli import main
    from multiclust.clip import OFFLINE_CAN_SEE
    (tmp_path / 'imgs').mkdir()
    for i, c in enumerate([(250, 0, 0), (0, 0, 250)] * 3): Image.new('RGB', (32, 32), c).save(tmp_path / 'imgs' / f'{i}.png')
    stand_in = tiny_clip(); stand_in.name, stand_in.note = 'offline', 'auto: stand-in for the offline pair'
    order = []
    real_fit = cl.Clusterer.fit
    monkeypatch.setattr(cl, 'load_encoder', lambda name, device='auto': stand_in)
    monkeypatch.setattr(cl.Clusterer, 'fit', lambda self, images: (order.append(capsys.readouterr().out), real_fit(self, images))[1])
    assert main(['cluster', str(tmp_path / 'imgs'), '--by', 'color', '--k', '2', '--words', 'red,blue', '--quick',
                 '--no-progress', '--out', str(tmp_path / 'out')]) == 0
    assert 'encoder offline on cpu' in order[0] and OFFLINE_CAN_SEE in order[0]      # printed before fit started
