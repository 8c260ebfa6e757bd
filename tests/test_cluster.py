"`multiclust cluster` and `multiclust.cluster`: unlabelled folders end to end (toy CLIP), bad input, the HTML gallery in Chromium."
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multiclust.cli import main
from multiclust.cluster import cluster
from multiclust.data import make_synthetic

pytestmark = pytest.mark.usefixtures('isolated_cache')   # conftest: a temporary cache, never ~/.cache
WORDS = 'red,green,blue,yellow,purple,orange'


@pytest.fixture
def photos(tmp_path):
    "48 generated shapes copied into a plain folder (two levels) without labels.csv, plus one broken file."
    syn = make_synthetic(root=tmp_path / 'syn', n=48, seed=3)
    d = tmp_path / 'my photos'
    for i, p in enumerate(syn.paths):
        q = d / ('a' if i % 2 else 'b') / Path(p).name
        q.parent.mkdir(parents=True, exist_ok=True); shutil.copy(syn.root / p, q)
    (d / 'b' / 'broken.png').write_bytes(b'\x89PNG not really')
    truth = pd.DataFrame({'path': [f"{'a' if i % 2 else 'b'}/{Path(p).name}" for i, p in enumerate(syn.paths)],
                          'color': syn.labels('color')})
    truth.to_csv(tmp_path / 'truth.csv', index=False)
    assert not (d / 'labels.csv').exists()
    return d


def _cli(args, cwd):
    old = os.getcwd(); os.chdir(cwd)
    try: return main(['cluster', *args, '--encoder', 'toyclip', '--quick', '--no-progress'])
    finally: os.chdir(old)


@pytest.mark.parametrize('k,words', [(None, WORDS), (4, WORDS), (None, None), (3, None)])
def test_cluster_command_end_to_end(photos, tmp_path, capsys, k, words):
    args = [str(photos), '--by', 'color', '--object', 'shape'] + (['--k', str(k)] if k else []) + (['--words', words] if words else [])
    assert _cli(args, tmp_path) == 0
    out = tmp_path / 'multiclust-my photos-color'                       # the default: in the working directory
    a = pd.read_csv(out / 'assignments.csv')
    info = json.loads((out / 'clusters.json').read_text())
    assert list(a.columns) == ['path', 'cluster', 'name', 'confidence'] and len(a) == 48
    assert 'b/broken.png' not in set(a.path) and [s['path'] for s in info['skipped']] == ['b/broken.png']
    assert 'skipped 1 unreadable file' in capsys.readouterr().out
    assert info['k_chosen_by'] == ('given' if k else 'silhouette') and a.cluster.nunique() == info['k']
    if k: assert info['k'] == k
    else: assert set(info['k_rule']['tried']) >= {'2', '3'} and 2 <= info['k'] <= 12
    assert info['word_source'] == ('user' if words else 'image-chosen')
    if not words:                                                           # no words, no key: the images chose them
        assert list(info['word_scores']) == info['words'] and 2 <= len(info['words']) <= 12
        assert all(0 < v <= 1 for v in info['word_scores'].values()) and 'WordNet' in info['word_note']
    assert info['encoder']['encoder'] == 'toyclip' and info['method'] == 'multisub' and info['runtime_s'] > 0
    names = dict(zip(a.cluster, a.name)); assert len(set(names.values())) == info['k']
    assert ((a.confidence > 0) & (a.confidence <= 1 + 1e-6)).all()
    assert (out / 'gallery.png').stat().st_size > 1000
    html = (out / 'gallery.html').read_text()
    assert html.count("class='cluster'") == info['k'] and 'src="http' not in html and "src='http" not in html
    assert all(w in html for w in info['words'])                        # the gallery names the words (and their scores)
    if not words: assert f"{info['words'][0]} {info['word_scores'][info['words'][0]]:.3f}" in html
    if not k: assert html.count("<td>K=") == len(info['k_rule']['tried']) and 'class=chosen' in html   # the K curve it chose from


def test_api_labels_equal_command_labels(photos, tmp_path):
    assert _cli([str(photos), '--by', 'color', '--object', 'shape', '--words', WORDS, '--seed', '2', '--out', str(tmp_path / 'o')],
                tmp_path) == 0
    a = pd.read_csv(tmp_path / 'o' / 'assignments.csv')
    r = cluster(photos, by='color', words=WORDS.split(','), object_word='shape', encoder='toyclip', quick=True, seed=2)
    assert list(r.paths_) == list(a.path)
    np.testing.assert_array_equal(r.labels_, a.cluster.to_numpy())
    assert list(r.assignments.name) == list(a.name)
    from multiclust import cluster as top
    assert top is cluster                                               # the package exports the function


def test_labels_score_the_run_and_second_concept_reuses_features(photos, tmp_path, monkeypatch):
    r = cluster(photos, by='color', k=6, words=WORDS.split(','), object_word='shape', encoder='toyclip', quick=True,
                labels=tmp_path / 'truth.csv')
    assert set(r.metrics_) >= {'nmi', 'ri', 'ari', 'acc'} and 0 <= r.metrics_['nmi'] <= 1
    import multiclust.data as md
    calls = []
    monkeypatch.setattr(md.Dataset, 'load_image', lambda self, i: calls.append(i) or (_ for _ in ()).throw(AssertionError('decoded')))
    r2 = cluster(photos, by='shape', k=5, words=['circle', 'square', 'triangle', 'star', 'hexagon'], template='a drawing of a *',
                 encoder=r.encoder, quick=True)                        # features from the cache: no image decoded
    assert calls == [] and len(r2.labels_) == 48


def test_bad_inputs(photos, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'junk').mkdir(); (tmp_path / 'junk' / 'x.jpg').write_bytes(b'no')
    cases = [([str(tmp_path / 'empty'), '--by', 'color'], 'no image files found'),
             ([str(tmp_path / 'nope'), '--by', 'color'], 'no such folder'),
             ([str(tmp_path / 'junk'), '--by', 'color'], "none of the 1 image file(s) can be read"),
             ([str(photos), '--by', 'color', '--k', '1', '--words', WORDS], 'at least 2 clusters'),
             ([str(photos), '--by', 'color', '--k', '49', '--words', WORDS], 'larger than the number of images (48)'),
             ([str(photos), '--by', 'zzqx'], "concept 'zzqx'"),               # not a word WordNet knows: nothing to choose from
             ([str(photos), '--by', 'pose', '--object', 'shape'], "no reference words for concept 'pose'"),
             ([str(photos), '--by', 'color', '--words', 'red'], 'at least 2 distinct words'),
             ([str(photos), '--by', 'color', '--words', WORDS, '--template', 'a shape'], '*'),
             ([str(photos), '--by', 'color', '--words', WORDS, '--method', 'zeroshot-label', '--k', '3'], 'oracle'),
             ([str(photos), '--by', 'color', '--words', WORDS, '--method', 'nope'], 'unknown method'),
             ([str(photos), '--by', 'color', '--words', WORDS, '--labels', str(tmp_path / 'none.csv')], 'labels file not found')]
    (tmp_path / 'one').mkdir(); shutil.copy(next(photos.glob('a/*.png')), tmp_path / 'one' / 'only.png')
    cases += [([str(tmp_path / 'one'), '--by', 'color', '--words', WORDS], 'only 1 readable image'),
              ([str(photos), '--by', 'color', '--words', WORDS, '--copy'], '--copy: only with --export folders')]
    for args, msg in cases:
        assert _cli(args, tmp_path) == 2, args
        err = capsys.readouterr().err
        assert msg in err, (args, err)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(('multiclust-', '.multiclust-'))]   # nothing half-written


@pytest.mark.parametrize('copy', [False, True])
def test_export_folders(photos, tmp_path, capsys, copy):
    "--export folders: one folder per cluster named by the cluster, links (or copies) of every image, the originals untouched."
    before = {p: p.read_bytes() for p in photos.rglob('*') if p.is_file()}
    out = tmp_path / 'o'
    assert _cli([str(photos), '--by', 'color', '--object', 'shape', '--words', WORDS, '--k', '4', '--out', str(out),
                 '--export', 'folders'] + (['--copy'] if copy else []), tmp_path) == 0
    assert 'clusters/: 4 folders' in capsys.readouterr().out
    a, info = pd.read_csv(out / 'assignments.csv'), json.loads((out / 'clusters.json').read_text())
    dirs = sorted((out / 'clusters').iterdir())
    assert [d.name for d in dirs] == [info['export']['clusters'][str(c)] for c in range(4)]
    for c, d in enumerate(dirs):
        assert d.name.startswith(f"{c} ") and info['clusters'][c]['name'].split(' / ')[0] in d.name
        files = sorted(f.name for f in d.iterdir())
        assert files == sorted(p.replace('/', '__') for p in a.path[a.cluster == c])
        for f in d.iterdir():
            assert f.is_symlink() != copy
            assert f.read_bytes() == (photos / f.name.replace('__', '/')).read_bytes()
    assert {p: p.read_bytes() for p in photos.rglob('*') if p.is_file()} == before      # nothing moved or changed
    assert _cli([str(photos), '--by', 'color', '--words', WORDS, '--k', '4', '--out', str(out), '--export', 'folders'],
                tmp_path) == 2                                                           # an existing --out is refused
    assert 'already holds files' in capsys.readouterr().err


def test_pil_images_and_paths(photos):
    from PIL import Image
    ims = [Image.new('RGB', (64, 64), c) for c in ['red', 'blue'] * 5]
    r = cluster(ims, by='color', k=2, words=['red', 'blue'], object_word='shape', encoder='toyclip', quick=True)
    assert len(r.labels_) == 10 and r.labels_[0] != r.labels_[1] and len(set(r.labels_[::2])) == 1
    files = sorted(photos.rglob('0*.png'))[:11] + [photos / 'b' / 'broken.png']
    r2 = cluster(files, by='color', k=3, words=WORDS.split(','), object_word='shape', encoder='toyclip', quick=True)
    assert len(r2.labels_) == 11 and [s['path'] for s in r2.skipped_] == ['b/broken.png']   # the broken file is listed


CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"headless Chromium not found at {CHROMIUM}: apt-get install chromium")
def test_gallery_html_renders_in_chromium(photos, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
    from lab_screenshot import CHROMIUM_FLAGS
    r = cluster(photos, by='color', k=3, words=WORDS.split(','), object_word='shape', encoder='toyclip', quick=True)
    out = r.save(tmp_path / 'g')
    page = out / 'gallery.html'
    html = page.read_text()
    page.write_text(html.replace('</body>', "<script>document.title='loaded ' + Array.from(document.images)"
                                 ".filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + document.images.length;"
                                 "</script></body>"))
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={tmp_path / "chrome"}', '--virtual-time-budget=5000',
                          '--dump-dom', page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n = html.count('<img ')
    assert f'<title>loaded {n} of {n}</title>' in dom.stdout, dom.stdout[:500]   # every inline thumbnail decoded
    assert dom.stdout.count('class="cluster"') == 3
    shot = tmp_path / 'shot.png'
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={tmp_path / "chrome"}', '--window-size=1000,800',
                    f'--screenshot={shot}', page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image
    assert shot.is_file() and np.asarray(Image.open(shot).convert('L')).std() > 5     # not a blank page


def test_full_mode_shows_the_selection_it_spends_its_time_on(photos, capsys):
    "The candidates are most of a full-mode fit: `progress=True` shows them; `progress=False` prints nothing."
    opts = dict(grid=dict(lr=[5e-2], weight_decay=[1e-4, 1e-5]), rounds=1, phase1_epochs=2, phase2_epochs=1, n_init=1)
    kw = dict(by='color', k=3, words=WORDS.split(','), object_word='shape', encoder='toyclip', quick=False)
    r = cluster(photos, progress=True, **kw, **opts)
    err = capsys.readouterr().err
    assert re.search(r'selecting lr x weight decay: +\d+%\|.*?\| \d/2 ', err), err   # its total: the grid's 2 candidates
    assert len(r.result_.params['selection']['candidates']) == 2
    cluster(photos, progress=False, **kw, **opts)
    assert 'selecting' not in capsys.readouterr().err


def test_unreachable_llm_lets_the_images_choose(photos, monkeypatch):
    "A key set but the LLM unreachable: the same words as without a key (the images choose), and the note says why."
    import multiclust.refwords as rw
    monkeypatch.setattr(rw, '_LLM_DOWN', {})
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-probe-not-a-real-key-000')
    monkeypatch.setenv('OPENAI_BASE_URL', 'http://127.0.0.1:9/v1')            # nothing listens: connection refused
    monkeypatch.setattr(rw.time, 'sleep', lambda s: None)
    r = cluster(photos, by='color', k=3, object_word='shape', encoder='toyclip')
    assert r.word_source_ == 'image-chosen' and 'LLM' in r.word_note_ and 'sk-probe' not in r.word_note_
    # a concept WordNet has no hyponym list for: the images are asked too (before the fix, WordNet's "no LLM
    # configured" error came first, false with a key set)
    with pytest.raises(Exception) as e: cluster(photos, by='pose', k=3, object_word='shape', encoder=r.encoder)
    assert "'pose'" in str(e.value) and 'no LLM (OPENAI_API_KEY)' not in str(e.value), str(e.value)
    monkeypatch.delenv('OPENAI_API_KEY'); monkeypatch.delenv('OPENAI_BASE_URL')
    assert cluster(photos, by='color', k=3, object_word='shape', encoder=r.encoder).words_ == r.words_
