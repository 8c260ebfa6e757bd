"""Scale, determinism, resume (issue 9): multi-process feature extraction under torchrun (gloo, 2 CPU ranks) equals
one process bit for bit; the same seed gives the same Multi-Sub result run to run (separate processes); a feature
extraction killed with SIGKILL resumes to the uninterrupted result; results files survive a write killed mid-way."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
TPL, WORDS = 'a shape with the color of *', ['red', 'green', 'blue', 'yellow', 'purple']


def _run(args, timeout=120, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO, **kw)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    "40 synthetic images, loaded by folder path the way `python -m multiclust.features <folder>` loads them."
    from multiclust.data import make_synthetic, load_dataset
    root = make_synthetic(root=tmp_path_factory.mktemp('data'), n=40, size=32).root
    return load_dataset(str(root))


@pytest.fixture(scope='module')
def reference(synth, tmp_path_factory):
    "The one-process cache (batch 8 -> 5 shards): features and the contents of features.safetensors."
    from multiclust.clip import tiny_clip
    from multiclust.features import extract_features, feature_cache_key
    enc, cache = tiny_clip(), tmp_path_factory.mktemp('cache1')
    F = extract_features(enc, synth, cache_dir=cache, batch_size=8, progress=False)
    return F, _contents(cache / feature_cache_key(enc, synth) / 'features.safetensors')


def _contents(path):
    '''Tensors and metadata of a safetensors file. (Not its bytes: the header is JSON written from a Rust HashMap,
    so the key order of the metadata, hence the bytes, can differ between processes for identical contents.)'''
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _same(a, b):
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


# ---------------------------------------------------------------- item 2: torchrun, 2 ranks == 1 rank
def _torchrun(ds, cache, nproc=2):
    return _run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc),
                 '-m', 'multiclust.features', str(ds.root), '--encoder', 'tiny', '--cache-dir', str(cache),
                 '--batch-size', '8', '--threads', '1', '--no-progress'], timeout=180)


def _final(ds, cache):
    from multiclust.clip import tiny_clip
    from multiclust.features import feature_cache_key
    return cache / feature_cache_key(tiny_clip(), ds) / 'features.safetensors'


def test_torchrun_two_ranks_equal_one(synth, reference, tmp_path):
    p = _torchrun(synth, tmp_path)
    assert 'from 2 process(es)' in p.stdout, p.stdout        # it really ran as a 2-rank group
    out = _final(synth, tmp_path)
    got = _contents(out)
    assert torch.equal(got[0]['features'], reference[0])       # bitwise: the join is a byte copy, not a float sum
    assert _same(got, reference[1])                            # same tensors and metadata
    assert not list(out.parent.glob('part-*'))                 # shards removed once assembled


def test_torchrun_resumes_shards_of_another_world_size(synth, reference, tmp_path):
    "Shards left by an interrupted 3-way split (rank 0 of 3 finished) are reused by a 2-rank run."
    from multiclust.clip import tiny_clip
    from multiclust.features import extract_features
    assert extract_features(tiny_clip(), synth, cache_dir=tmp_path, batch_size=8, progress=False, shard=(0, 3)) is None
    parts = sorted(p.name for p in _final(synth, tmp_path).parent.glob('part-*.safetensors'))
    assert parts == ['part-00000000-00000008.safetensors', 'part-00000024-00000032.safetensors']
    _torchrun(synth, tmp_path)
    assert _same(_contents(_final(synth, tmp_path)), reference[1])


# ---------------------------------------------------------------- item 4: kill extraction, resume
SLOW_EXTRACT = textwrap.dedent('''
    import sys, time, torch
    torch.set_num_threads(1)
    from multiclust.clip import tiny_clip
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    enc = tiny_clip()
    f = enc.encode_image_features
    def slow(x):
        time.sleep(0.4)
        return f(x)
    enc.encode_image_features = slow
    extract_features(enc, load_dataset(sys.argv[1]), cache_dir=sys.argv[2], batch_size=8, progress=False)
''')


def test_sigkill_during_extraction_then_resume(synth, reference, tmp_path):
    from multiclust.clip import tiny_clip
    from multiclust.features import extract_features
    script = tmp_path / 'slow_extract.py'; script.write_text(SLOW_EXTRACT)
    cache = tmp_path / 'cache'
    d = _final(synth, cache).parent
    proc = subprocess.Popen([sys.executable, str(script), str(synth.root), str(cache)], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while len(list(d.glob('part-*.safetensors'))) < 2:
            assert proc.poll() is None, f"extraction ended before it was killed: {proc.communicate()[1].decode()[-2000:]}"
            assert time.time() - t0 < 90, 'no shards appeared within 90 s'
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill(); proc.wait()
    done = sorted(d.glob('part-*.safetensors'))
    assert 2 <= len(done) < 5 and not (d / 'features.safetensors').exists()
    enc = tiny_clip()
    calls = []
    f = enc.encode_image_features
    enc.encode_image_features = lambda x: (calls.append(len(x)), f(x))[1]
    F = extract_features(enc, synth, cache_dir=cache, batch_size=8, progress=False)
    assert len(calls) == 5 - len(done)                          # finished shards reused, only the rest computed
    assert torch.equal(F, reference[0])
    assert _same(_contents(d / 'features.safetensors'), reference[1])


# ---------------------------------------------------------------- item 4: results files are written atomically
SLOW_SAVE = textwrap.dedent('''
    import sys, time, os
    import multiclust.report as rep, multiclust.files as files
    class Slow:                                  # writes in small flushed pieces, slowly: a kill lands mid-write
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *a): self.f.close()
        def write(self, s):
            for i in range(0, len(s), 64):
                self.f.write(s[i:i + 64]); self.f.flush(); time.sleep(0.01)
    real_open = open
    def slow_open(path, mode="r", *a, **k):      # the one writer (files.atomic_write_file) writes through open()
        f = real_open(path, mode, *a, **k)
        return Slow(f) if 'w' in mode else f
    files.open = slow_open
    rows = [dict(dataset='d', method='m', concept=f'c{i}', seed=i, nmi=0.5) for i in range(400)]
    rep.save_results(rows, 'd', sys.argv[1])
''')


def test_save_results_killed_mid_write_keeps_old_file(tmp_path):
    from multiclust.report import save_results, load_results
    old = [dict(dataset='d', method='m', concept='c', seed=0, nmi=0.25)]
    csv = save_results(old, 'd', tmp_path)
    before = (csv.read_bytes(), csv.with_suffix('.json').read_bytes())
    script = tmp_path / 'slow_save.py'; script.write_text(SLOW_SAVE)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not any(p.stat().st_size > 1000 for p in tmp_path.glob('.d.csv.*.tmp')):
            assert proc.poll() is None, f"save ended before it was killed: {proc.communicate()[1].decode()[-2000:]}"
            assert time.time() - t0 < 60, 'no temporary file appeared within 60 s'
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill(); proc.wait()
    assert (csv.read_bytes(), csv.with_suffix('.json').read_bytes()) == before   # the old results, whole
    assert load_results('d', tmp_path) == json.loads(before[1])
    save_results(old * 2, 'd', tmp_path)                                          # the next save still works
    assert len(load_results('d', tmp_path)) == 2


def test_save_results_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import multiclust.report as rep, multiclust.files as files
    csv = rep.save_results([dict(dataset='d', method='m', concept='c', seed=0, nmi=0.25)], 'd', tmp_path)
    before = csv.read_bytes()
    def boom(*a, **k): raise KeyboardInterrupt('interrupted before the rename')
    monkeypatch.setattr(rep.os, 'replace', boom)
    with pytest.raises(KeyboardInterrupt): rep.save_results([dict(dataset='d', method='x', concept='c', seed=1)], 'd', tmp_path)
    assert csv.read_bytes() == before and not list(tmp_path.glob('.*.tmp'))      # old file intact, temp file removed


# ---------------------------------------------------------------- item 3: determinism and seeds
FIT = textwrap.dedent('''
    import json, sys, numpy as np, torch
    from multiclust.clip import tiny_clip
    from multiclust.multisub import MultiSub
    def fit(seed):
        enc = tiny_clip()
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(60, enc.feature_dim, generator=g)
        true = np.arange(60) % 3
        ms = MultiSub(enc, rounds=2, phase1_epochs=2, phase2_epochs=1, batch_size=16, n_init=2, threads=1, seed=seed)
        r = ms.fit_features(feats, TPL, WORDS, 3, true, 'random', 'color')
        return dict(labels=r.labels.tolist(), metrics=r.metrics, history=r.history,
                    token_image=r.embeddings['token+image'].tolist(), row=r.row())
    if __name__ == '__main__':
        json.dump(fit(int(sys.argv[1])), open(sys.argv[2], 'w'))
''').replace('TPL, WORDS', f'{TPL!r}, {WORDS!r}')


def test_same_seed_same_result_run_to_run(tmp_path):
    "Two separate processes (fresh interpreters), seed 7: identical labels, metrics, history and embeddings."
    script = tmp_path / 'fit.py'; script.write_text(FIT)
    outs = []
    for i in range(2):
        _run([sys.executable, str(script), '7', str(tmp_path / f'r{i}.json')])
        outs.append(json.loads((tmp_path / f'r{i}.json').read_text()))
    a, b = outs
    assert a['labels'] == b['labels'] and a['metrics'] == b['metrics'] and a['history'] == b['history']
    assert a['token_image'] == b['token_image']
    assert len(set(a['labels'])) > 1 and a['history'] and 'nmi' in a['metrics']


def test_seeds_reported_as_mean_std(tmp_path):
    "Three seeds in this process: the table cell is mean±std over them (population std, as mean_std computes it)."
    import importlib.util
    import pandas as pd
    from multiclust.report import pivot_mean_std, mean_std
    script = tmp_path / 'fit.py'; script.write_text(FIT)
    spec = importlib.util.spec_from_file_location('fit_mod', script); mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [mod.fit(s)['row'] for s in (0, 1, 2)]
    df = pd.DataFrame(rows)
    assert list(df.seed) == [0, 1, 2]
    nmi = df.nmi.to_numpy()
    t = pivot_mean_std(df, index='method', columns='concept', metric='nmi')
    assert t.loc['multi-sub', 'color'] == f"{nmi.mean():.3f}±{nmi.std(ddof=0):.3f}"
    ms = mean_std(df, ['method', 'concept'], ('nmi', 'ri'))
    assert int(ms.n.iloc[0]) == 3
    np.testing.assert_allclose(ms.nmi_mean.iloc[0], nmi.mean())
    # same seed again in this process: the row's metrics repeat exactly
    assert mod.fit(1)['row']['nmi'] == rows[1]['nmi']
