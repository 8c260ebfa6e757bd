"""Issue 24's probes of `multiclust cluster`, `multiclust run` and `cluster()`: what a run does to a user's files
and results. Each test failed on the code before the fix; a change that brings a behaviour back fails here.
Toy CLIP, small folders, a temporary cache (never ~/.cache)."""
import json, os, shutil, stat, sys, threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import importlib
from multiclust.cli import main
from multiclust.cluster import Clusterer, cluster, scan_images
from multiclust.data import make_synthetic

mcluster = importlib.import_module('multiclust.cluster')   # the module (the package exports a function of that name)

pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache
WORDS = 'red,green,blue,yellow,purple,orange'


@pytest.fixture
def photos(tmp_path):
    "24 generated shapes in a plain folder, and truth.csv (path,color,shape) beside it."
    syn = make_synthetic(root=tmp_path / 'syn', n=24, seed=5)
    d = tmp_path / 'photos'; d.mkdir()
    for p in syn.paths: shutil.copy(syn.root / p, d / Path(p).name)
    pd.DataFrame({'path': [Path(p).name for p in syn.paths], 'color': syn.labels('color'),
                  'shape': syn.labels('shape')}).to_csv(tmp_path / 'truth.csv', index=False)
    return d


def _cli(args, cwd, fast=True):
    "`multiclust cluster ARGS` in `cwd` with the toy CLIP (fast: k-means, K=2: seconds)."
    old = os.getcwd(); os.chdir(cwd)
    extra = ['--method', 'kmeans', '--k', '2'] if fast else []
    try: return main(['cluster', *args, '--encoder', 'toyclip', '--quick', '--no-progress', *extra])
    finally: os.chdir(old)


@pytest.fixture
def no_compute(monkeypatch):
    "Any feature extraction fails the test: what is checked here must be checked before compute."
    def boom(*a, **k): raise AssertionError('computed features before checking the arguments')
    monkeypatch.setattr(mcluster, 'extract_features', boom)


# 1. the decode check is keyed by content, as the feature cache is
def test_decode_check_follows_content_not_mtime(photos):
    f = photos / sorted(os.listdir(photos))[0]
    good, st = f.read_bytes(), f.stat()
    assert scan_images(photos)[1] == []
    f.write_bytes(b'\0' * len(good)); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # same size, same mtime
    ds, bad = scan_images(photos)
    assert [b['path'] for b in bad] == [f.name] and f.name not in ds.paths
    f.write_bytes(good); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))                # repaired
    ds, bad = scan_images(photos)
    assert bad == [] and len(ds) == 24


# 2. two runs into one --out: each set whole
def test_two_runs_into_one_out_keep_both_sets_whole(photos, tmp_path):
    res = cluster(photos, by='color', k=2, method='kmeans', encoder='toyclip', quick=True, words=WORDS.split(','))
    go, err, real = threading.Barrier(2), [], mcluster._html
    def slow_html(self, *a, **k):                   # both runs are writing their sets at the same moment
        go.wait(timeout=60); return real(self, *a, **k)
    def save():
        try: res.save(tmp_path / 'out')
        except Exception as e: err.append(e)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(mcluster, '_html', slow_html)
        ts = [threading.Thread(target=save) for _ in range(2)]; [t.start() for t in ts]; [t.join() for t in ts]
    outs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('out'))
    assert not err and outs == ['out', 'out-2'], (err, outs)
    for o in outs:
        assert sorted(os.listdir(tmp_path / o)) == ['assignments.csv', 'clusters.json', 'gallery.html', 'gallery.png']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.out')]        # no temporary left


def test_gallery_png_has_no_fixed_temporary_name(photos, tmp_path):
    res = cluster(photos, by='color', k=2, method='kmeans', encoder='toyclip', quick=True, words=WORDS.split(','))
    (tmp_path / '.g.png.tmp.png').mkdir()          # the old fixed name, taken: a unique name is not disturbed
    res.gallery(tmp_path / 'g.png')
    assert (tmp_path / 'g.png').stat().st_size > 1000


# 3. earlier results are never replaced without a word
def test_existing_out_is_refused_before_compute_and_force_replaces_whole(photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'out'; out.mkdir(); (out / 'mine.txt').write_text('keep me')
    with monkeypatch.context() as m:
        m.setattr(mcluster, 'extract_features', lambda *a, **k: (_ for _ in ()).throw(AssertionError('computed')))
        assert _cli([str(photos), '--by', 'color', '--words', WORDS, '--out', str(out)], tmp_path) == 2
    assert '--force' in capsys.readouterr().err and (out / 'mine.txt').read_text() == 'keep me'
    assert _cli([str(photos), '--by', 'color', '--words', WORDS, '--out', str(out), '--force'], tmp_path) == 0
    assert sorted(os.listdir(out)) == ['assignments.csv', 'clusters.json', 'gallery.html', 'gallery.png']


def test_same_folder_name_gets_a_numbered_default_out(photos, tmp_path, capsys):
    other = tmp_path / 'B' / 'photos'; shutil.copytree(photos, other)
    assert _cli([str(photos), '--by', 'color', '--words', WORDS], tmp_path) == 0
    assert _cli([str(other), '--by', 'color', '--words', WORDS], tmp_path) == 0
    out = capsys.readouterr().out
    a = json.loads((tmp_path / 'multiclust-photos-color' / 'clusters.json').read_text())
    b = json.loads((tmp_path / 'multiclust-photos-color-2' / 'clusters.json').read_text())
    assert (a['folder'], b['folder']) == (str(photos), str(other)) and 'multiclust-photos-color-2' in out


def test_save_after_a_features_fit_does_not_mix_concepts(photos, tmp_path):
    r = cluster(photos, by='color', k=2, method='kmeans', encoder='toyclip', quick=True, words=WORDS.split(','))
    r.save(tmp_path / 'o')
    X = mcluster.extract_features(r.encoder, r.dataset_, progress=False)
    r2 = Clusterer('shape', 2, method='kmeans', encoder=r.encoder, words=['circle', 'square']).fit(X)
    with pytest.raises(FileExistsError, match='force'): r2.save(tmp_path / 'o')
    assert json.loads((tmp_path / 'o' / 'clusters.json').read_text())['concept'] == 'color'
    r2.save(tmp_path / 'o', force=True)
    assert sorted(os.listdir(tmp_path / 'o')) == ['assignments.csv', 'clusters.json']   # no stale 'color' gallery


# 4. everything checkable is checked before compute
@pytest.mark.parametrize('case', ['labels-missing', 'labels-paths', 'out-is-file', 'labels-all-distinct'])
def test_bad_arguments_fail_before_compute(photos, tmp_path, capsys, no_compute, case):
    args = [str(photos), '--by', 'color', '--words', WORDS]
    if case == 'labels-missing': args += ['--labels', str(tmp_path / 'nope.csv')]; want = 'nope.csv'
    if case == 'labels-paths':
        pd.DataFrame({'path': ['x.png', 'y.png'], 'color': ['r', 'g']}).to_csv(tmp_path / 'l.csv', index=False)
        args += ['--labels', str(tmp_path / 'l.csv')]; want = 'have no row'
    if case == 'out-is-file': (tmp_path / 'f').write_text('x'); args += ['--out', str(tmp_path / 'f')]; want = 'not a folder'
    if case == 'labels-all-distinct':
        t = pd.read_csv(tmp_path / 'truth.csv'); t['color'] = [f'c{i}' for i in range(len(t))]
        t.to_csv(tmp_path / 'u.csv', index=False); args += ['--labels', str(tmp_path / 'u.csv')]; want = 'every image'
    assert _cli(args, tmp_path) == 2
    err = capsys.readouterr().err
    assert want in err and 'Traceback' not in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(('multiclust-', '.multiclust-'))]


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_out_fails_before_compute(photos, tmp_path, capsys, no_compute):
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o555)
    try: assert _cli([str(photos), '--by', 'color', '--words', WORDS, '--out', str(ro / 'out')], tmp_path) == 2
    finally: ro.chmod(0o755)
    assert 'cannot write' in capsys.readouterr().err


# 5. an unreachable LLM falls back to WordNet, once per process
def test_unreachable_llm_falls_back_to_wordnet(monkeypatch):
    import multiclust.refwords as rw
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-probe-not-a-real-key-000')
    monkeypatch.setenv('OPENAI_BASE_URL', 'http://127.0.0.1:9/v1')            # nothing listens: connection refused
    monkeypatch.setattr(rw.time, 'sleep', lambda s: None)
    r = rw.user_reference_words('color')
    assert r.source == 'wordnet-hyponyms' and 'LLM' in r.note and 'sk-probe' not in r.note
    monkeypatch.setattr(rw, 'query_llm', lambda *a, **k: pytest.fail('asked the unreachable LLM again'))
    assert rw.user_reference_words('color').words == r.words


# 6, 7 and 5's rows: `run` on a labelled folder of one's own
def test_run_on_a_labelled_folder_skips_bad_columns_and_keeps_failed_rows(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('MPLBACKEND', 'Agg'); monkeypatch.delenv('IN_TEST', raising=False)
    monkeypatch.delenv('OPENAI_API_KEY', raising=False); monkeypatch.delenv('OPENAI_BASE_URL', raising=False)
    t = pd.read_csv(tmp_path / 'truth.csv')
    t['one'] = 'same'                                        # a single class: skipped, the run goes on
    t['uid'] = [f'u{i}' for i in range(len(t))]              # K = N: NMI would be 1 by construction: skipped
    t['zqxv'] = ['a', 'b'] * (len(t) // 2)                   # no words anywhere: failed rows, with the reason, saved
    t.to_csv(photos / 'labels.csv', index=False)
    rc = main(['run', '--dataset', str(photos), '--encoder', 'toyclip', '--quick', '--no-progress',
               '--out', str(tmp_path / 'nbout'), '--results-dir', str(tmp_path / 'results'),
               '--figures-dir', str(tmp_path / 'figures'), '-p', "methods='kmeans,multisub'", '-p', "sections='main'",
               '-p', 'new_concept=""'])
    rows = json.loads((tmp_path / 'results' / 'photos.json').read_text())
    st = {(r['method'], r['concept']): r['status'] for r in rows}
    assert st[('kmeans', 'color')] == 'ok' and st[('multisub', 'color')] == 'ok'     # the default template
    assert st[('kmeans', 'zqxv')] == 'ok' and st[('multisub', 'zqxv')].startswith('failed') and 'zqxv' in st[('multisub', 'zqxv')]
    assert 'single class' in st[('-', 'one')] and 'every image' in st[('-', 'uid')]
    assert rc == 1                                           # a failed row: the exit code says so


def test_run_one_concept_beside_a_single_class_column(photos, tmp_path, monkeypatch):
    monkeypatch.setenv('MPLBACKEND', 'Agg'); monkeypatch.delenv('IN_TEST', raising=False)
    t = pd.read_csv(tmp_path / 'truth.csv'); t['one'] = 'same'; t.to_csv(photos / 'labels.csv', index=False)
    rc = main(['run', '--dataset', str(photos), '--encoder', 'toyclip', '--quick', '--no-progress', '--concept', 'color',
               '--words', WORDS, '--out', str(tmp_path / 'nbout'), '--results-dir', str(tmp_path / 'results'),
               '--figures-dir', str(tmp_path / 'figures'), '-p', "methods='kmeans'", '-p', "sections='main'",
               '-p', 'new_concept=""'])
    rows = json.loads((tmp_path / 'results' / 'photos.json').read_text())
    assert rc == 0 and [(r['method'], r['concept'], r['status']) for r in rows] == [('kmeans', 'color', 'ok')]


# 7. K = N is refused
def test_k_equal_to_n_is_refused(photos):
    from multiclust.core import check_k
    with pytest.raises(ValueError, match='every image'): check_k(24, 24)
    with pytest.raises(ValueError, match='every image'):
        cluster(photos, by='color', k=24, method='kmeans', encoder='toyclip', words=WORDS.split(','))


# 8. a prompt too long for the encoder says so
def test_long_prompt_names_the_context_length():
    from multiclust.clip import load_encoder, PromptError
    from multiclust.proxy import check_template
    enc = load_encoder('toyclip')
    with pytest.raises(PromptError, match='context') as e:
        check_template(enc, 'a photo of a very small and rather old and quite dusty car with the paint color of *')
    assert "without a '*'" not in str(e.value)


# 9. smaller things
@pytest.mark.parametrize('args,flag', [(['--by', ' '], '--by'), (['--by', 'color', '--words', 'red'], '--words'),
                                       (['--by', 'color', '--k', '1'], '--k')])
def test_cli_errors_name_flags(photos, tmp_path, capsys, no_compute, args, flag):
    old = os.getcwd(); os.chdir(tmp_path)
    try: rc = main(['cluster', str(photos), *args, '--encoder', 'toyclip', '--no-progress'])
    finally: os.chdir(old)
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and 'by=' not in err and 'words=' not in err and 'k must' not in err


def test_by_with_path_parts_stays_in_the_working_folder(photos, tmp_path):
    work = tmp_path / 'work'; work.mkdir()
    assert _cli([str(photos), '--by', 'x/../../TRAV', '--words', WORDS], work) == 0
    made = [p for p in tmp_path.rglob('*') if 'TRAV' in p.name]
    assert made and all(p.parent == work for p in made), made


def test_outputs_have_the_umask_mode(photos, tmp_path):
    old = os.umask(0o022)
    try: assert _cli([str(photos), '--by', 'color', '--words', WORDS, '--out', str(tmp_path / 'o')], tmp_path) == 0
    finally: os.umask(old)
    for f in (tmp_path / 'o').iterdir(): assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_interrupt_ends_cleanly_and_leaves_nothing_half_written(photos, tmp_path, capsys, monkeypatch):
    def interrupt(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(mcluster, 'extract_features', interrupt)
    assert _cli([str(photos), '--by', 'color', '--words', WORDS], tmp_path) == 130
    err = capsys.readouterr().err
    assert 'interrupted' in err and 'Traceback' not in err
    assert [p.name for p in tmp_path.iterdir() if 'multiclust' in p.name] == []


@pytest.mark.parametrize('argv', [['run', '--dataset', 'synthetic', '-p', 'openai_api_key', 'sk-SECRETVALUE123'],
                                  ['run', '--dataset', 'synthetic', '-p', 'openai_api_key=sk-SECRETVALUE123'],
                                  ['demo', '--param', 'token', 'sk-SECRETVALUE123', '--bogus']])
def test_a_secret_on_the_command_line_is_never_echoed(argv, capsys):
    try: rc = main(argv)
    except SystemExit as e: rc = e.code
    o = capsys.readouterr()
    assert rc == 2 and 'SECRETVALUE' not in o.out + o.err and 'environment' in o.err


def test_hidden_files_and_symlinked_folders_are_said(photos, tmp_path, capsys):
    ext = tmp_path / 'elsewhere'; ext.mkdir(); shutil.copy(next(photos.glob('*.png')), ext / 'x.png')
    (photos / 'linked').symlink_to(ext, target_is_directory=True)
    shutil.copy(next(photos.glob('*.png')), photos / '.hidden.png')
    ds, skipped = scan_images(photos)
    why = {s['path']: s['reason'] for s in skipped}
    assert len(ds) == 24 and 'hidden' in why['.hidden.png'] and 'symlink' in why['linked']
    assert _cli([str(photos), '--by', 'color', '--words', WORDS], tmp_path) == 0
    out = capsys.readouterr().out
    assert '.hidden.png' in out and 'linked' in out
