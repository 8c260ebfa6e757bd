"""05_ablation through papermill and the `multiclust` command: injected parameters, resume, bad input, summary.

The full notebook in quick mode runs under nbdev_test (every section); these runs restrict `methods` and
`sections` through papermill parameters, which is itself what they test, so each takes well under a minute."""
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from multiclust.cli import main as cli_main, REPO

NB = REPO / 'nbs' / '05_ablation.ipynb'
FAST = ['-p', 'encoder=toyclip', '-p', "sections='main'", '-p', 'new_concept=""']


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    "Generated data and features go to a temporary cache (the kernel papermill starts inherits the environment)."
    monkeypatch.setenv('MULTICLUST_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.delenv('IN_TEST', raising=False)   # IN_TEST redirects outputs to a temp dir: not what is tested here


def _papermill(tmp_path, name, **params):
    import papermill as pm
    out = tmp_path / f'{name}.ipynb'
    params = {'results_dir': str(tmp_path / 'results'), 'figures_dir': str(tmp_path / 'figures'), **params}
    pm.execute_notebook(str(NB), str(out), parameters=params, cwd=str(NB.parent), kernel_name='python3',
                        progress_bar=False)
    return out, json.loads((tmp_path / 'results' / f"{params.get('dataset', 'synthetic')}.json").read_text())


def test_injected_parameters_change_the_run_and_rerun_resumes(tmp_path):
    out, rows = _papermill(tmp_path, 'a', methods='kmeans', sections='main', seeds=2, new_concept='')
    # the injected cell is there, after the parameters cell, and the run obeyed it
    nb = json.loads(out.read_text())
    tags = [c['metadata'].get('tags', []) for c in nb['cells']]
    assert ['injected-parameters'] in tags and tags.index(['injected-parameters']) == tags.index(['parameters']) + 1
    assert {r['method'] for r in rows} == {'kmeans'} and {r['section'] for r in rows} == {'main'}
    assert sorted({r['seed'] for r in rows}) == [0, 1] and {r['concept'] for r in rows} == {'color', 'shape', 'size', 'background'}
    assert all(r['status'] == 'ok' and r['encoder'] == 'toyclip' and r['quick'] for r in rows)
    # the default (no injection) would have run every method: the parameter really changed the run
    assert len(rows) == 4 * 2
    # a second run with the same settings resumes: nothing recomputed, the same rows
    out2, rows2 = _papermill(tmp_path, 'b', methods='kmeans', sections='main', seeds=2, new_concept='')
    assert rows2 == rows
    assert 'resuming with 8 finished rows' in out2.read_text()
    # other settings: the earlier rows are archived, not lost
    _, rows3 = _papermill(tmp_path, 'c', methods='kmeans', sections='main', seeds=1, new_concept='', epochs=1)
    assert len(rows3) == 4 and all(r['epochs'] == 1 for r in rows3)
    arch = list((tmp_path / 'results' / 'archive').glob('synthetic-*.json'))
    assert len(arch) == 1 and json.loads(arch[0].read_text()) == rows


def test_multiclust_run_writes_summary_and_prints_table(tmp_path, capsys):
    rc = cli_main(['run', '--dataset', 'synthetic', '--quick', '--out', str(tmp_path / 'out'), '--no-progress',
                   '--results-dir', str(tmp_path / 'results'), '--figures-dir', str(tmp_path / 'figures'),
                   '-p', "methods=kmeans,zeroshot-gpt"] + FAST)
    text = capsys.readouterr().out
    assert rc == 0, text
    summ = pd.read_csv(tmp_path / 'results' / 'summary.csv')
    assert set(summ['method']) == {'kmeans', 'zeroshot-gpt'} and set(summ['dataset']) == {'synthetic'}
    assert 'NMI (mean±std over seeds), encoder: toyclip' in text and 'zeroshot-gpt' in text
    assert (tmp_path / 'out' / 'synthetic.ipynb').exists()
    assert (tmp_path / 'figures' / 'synthetic_main_nmi.png').stat().st_size > 1000


def test_unknown_dataset_lists_known_and_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('MULTICLUST_DATA', str(tmp_path))
    assert cli_main(['run', '--dataset', 'nosuchset', '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nosuchset'" in err and 'cmuface' in err and str(tmp_path) in err


def test_missing_data_root_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('MULTICLUST_DATA', str(tmp_path / 'nowhere'))
    assert cli_main(['run', '--dataset', 'cmuface', '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'nowhere' in err and 'MULTICLUST_DATA' in err


def test_failing_dataset_does_not_stop_the_others(tmp_path, capsys):
    "A dataset whose notebook fails is reported at the end with its error; the next one still runs."
    bad = tmp_path / 'broken'; (bad / 'images').mkdir(parents=True)
    (bad / 'labels.csv').write_text('path,color\nimages/a.png,red\nimages/b.png,blue\n')   # files missing
    rc = cli_main(['run', '--dataset', str(bad), '--dataset', 'synthetic', '--quick', '--out', str(tmp_path / 'out'),
                   '--no-progress', '--results-dir', str(tmp_path / 'results'), '--figures-dir', str(tmp_path / 'f'),
                   '-p', 'methods=kmeans'] + FAST)
    text = capsys.readouterr().out
    assert rc == 1
    assert '1 dataset(s) ok, 1 failed' in text and 'FAILED ' + str(bad) in text and 'missing' in text
    assert pd.read_csv(tmp_path / 'results' / 'summary.csv')['dataset'].unique().tolist() == ['synthetic']


def test_registered_dataset_missing_a_concept_column_skips_it(tmp_path, data_root):
    "cars without its 'type' column: 'type' is reported as skipped with the reason, 'color' runs."
    src = pd.read_csv(data_root / 'cars' / 'labels.csv').head(24)
    root = tmp_path / 'data'; (root / 'cars').mkdir(parents=True)
    (root / 'cars' / 'images').symlink_to(data_root / 'cars' / 'images')      # read in place, never copied
    src[['path', 'color']].to_csv(root / 'cars' / 'labels.csv', index=False)
    _, rows = _papermill(tmp_path, 'cars', dataset='cars', data_root=str(root), methods='kmeans', sections='main',
                         new_concept='', encoder='toyclip')
    by = {r['concept']: r for r in rows}
    assert by['color']['status'] == 'ok' and by['color']['method'] == 'kmeans'
    assert by['type']['status'].startswith("skipped: column 'type' is not in") and 'labels.csv' in by['type']['status']


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / 'multiclust'
    assert exe.exists(), f"console script not installed at {exe}: pip install -e ."
    r = subprocess.run([str(exe), 'list'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'synthetic' in r.stdout and 'generated' in r.stdout
