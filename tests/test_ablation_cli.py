"""05_ablation through papermill and the `multiclust` command: injected parameters, resume, bad input, summary.

The full notebook in quick mode runs under nbdev_test (every section); these runs restrict `methods` and
`sections` through papermill parameters, which is itself what they test, so each takes well under a minute."""
import ast, json, os, re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from multiclust.cli import main as cli_main
from multiclust.report import REPO

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
    return out, json.loads((tmp_path / 'results' / f"{Path(params.get('dataset', 'synthetic')).name}.json").read_text())


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
    # a second run with the same inputs resumes: nothing recomputed, the same rows
    out2, rows2 = _papermill(tmp_path, 'b', methods='kmeans', sections='main', seeds=2, new_concept='')
    assert rows2 == rows
    assert "resuming: 8 finished rows with this run's inputs" in out2.read_text()
    # other inputs (epochs): the earlier rows are archived, not lost, and recomputed
    _, rows3 = _papermill(tmp_path, 'c', methods='kmeans', sections='main', seeds=1, new_concept='', epochs=1)
    assert len(rows3) == 4 and all(r['epochs'] == 1 for r in rows3)
    arch = json.loads((tmp_path / 'results' / 'archive' / 'synthetic.json').read_text())
    assert sorted(map(json.dumps, arch)) == sorted(map(json.dumps, rows))


def _folder_dataset(tmp_path, n=24):
    "A small labelled folder (generated shapes), run by path like a user's own dataset."
    from multiclust.data import make_synthetic
    return make_synthetic(root=tmp_path / 'mydata', n=n, seed=5).root


def test_resume_is_keyed_on_the_labels_content(tmp_path):
    "Shuffling a labels column changes the truth: the rows are recomputed and the old ones archived."
    root = _folder_dataset(tmp_path)
    _, rows = _papermill(tmp_path, 'a', dataset=str(root), methods='kmeans', sections='main', new_concept='', encoder='toyclip')
    df = pd.read_csv(root / 'labels.csv')
    df['color'] = df['color'].sample(frac=1, random_state=1).to_numpy()
    df.to_csv(root / 'labels.csv', index=False)
    out, rows2 = _papermill(tmp_path, 'b', dataset=str(root), methods='kmeans', sections='main', new_concept='', encoder='toyclip')
    key = lambda r: (r['method'], r['concept'])
    old, new = {key(r): r for r in rows}, {key(r): r for r in rows2}
    assert old[('kmeans', 'color')]['inputs'] != new[('kmeans', 'color')]['inputs']
    assert old[('kmeans', 'color')]['nmi'] != new[('kmeans', 'color')]['nmi']
    assert old[('kmeans', 'shape')] == new[('kmeans', 'shape')]                         # untouched concepts resume
    arch = json.loads((tmp_path / 'results' / 'archive' / f'{root.name}.json').read_text())
    assert [key(r) for r in arch] == [('kmeans', 'color')]


def test_oracle_rows_resume_instead_of_piling_up(tmp_path):
    for name in 'ab':
        _, rows = _papermill(tmp_path, name, methods='zeroshot-label', sections='main', new_concept='')
    assert len(rows) == 4 and {r['method'] for r in rows} == {'zeroshot-label'}


def test_failed_rows_fail_the_run_and_are_not_resumed(tmp_path, capsys):
    "One image: every row fails (K > N); the command exits 1 and lists them; a fixed rerun recomputes them."
    args = ['run', '--dataset', 'synthetic', '--quick', '--out', str(tmp_path / 'out'), '--no-progress',
            '--results-dir', str(tmp_path / 'results'), '--figures-dir', str(tmp_path / 'f'), '-p', 'methods=kmeans'] + FAST
    rc = cli_main(args + ['-p', 'max_images=1'])
    text = capsys.readouterr().out
    assert rc == 1 and '0 dataset(s) ok, 1 failed' in text
    assert text.count('main/kmeans/') == 4 and 'main/kmeans/color/seed 0: failed' in text
    rows = json.loads((tmp_path / 'results' / 'synthetic.json').read_text())
    assert len(rows) == 4 and all(r['status'].startswith('failed') for r in rows)
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    rows = json.loads((tmp_path / 'results' / 'synthetic.json').read_text())
    assert len(rows) == 4 and all(r['status'] == 'ok' for r in rows) and 'no finished rows to resume from' in \
        (tmp_path / 'out' / 'synthetic.ipynb').read_text()


def test_two_concurrent_runs_into_one_results_folder_keep_every_row(tmp_path):
    exe = Path(sys.executable).parent / 'multiclust'
    env = dict(os.environ, MULTICLUST_CACHE=str(tmp_path / 'cache'), MPLBACKEND='Agg')
    env.pop('IN_TEST', None)
    from multiclust.data import make_synthetic
    make_synthetic()                                    # generated once, before the two runs race for it
    procs = [subprocess.Popen([str(exe), 'run', '--dataset', 'synthetic', '--quick', '--no-progress',
                               '--out', str(tmp_path / f'out{i}'), '--results-dir', str(tmp_path / 'results'),
                               '--figures-dir', str(tmp_path / f'f{i}'), '-p', f'methods={m}'] + FAST,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, m in enumerate(['kmeans', 'zeroshot-gpt,text-anchored'])]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = json.loads((tmp_path / 'results' / 'synthetic.json').read_text())
    assert sorted((r['method'], r['concept']) for r in rows) == sorted(
        (m, c) for m in ('kmeans', 'zeroshot-gpt', 'text-anchored') for c in ('color', 'shape', 'size', 'background'))


@pytest.mark.parametrize('argv, msg', [
    (['-p', 'methds=kmeans'], "did you mean 'methods'"),
    (['-p', 'openai_api_key=sk-not-a-real-key'], 'looks like a secret'),
    (['--seeds', '0'], '--seeds must be at least 1'),
])
def test_bad_command_lines_are_refused_before_running(tmp_path, capsys, argv, msg):
    rc = cli_main(['run', '--dataset', 'synthetic', '--out', str(tmp_path / 'out'), '--results-dir', str(tmp_path / 'r')] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and 'sk-not-a-real-key' not in err
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'r').exists()


def test_papermill_itself_refuses_unknown_and_secret_parameters(tmp_path):
    import papermill as pm
    for params, msg in [(dict(methds='kmeans'), "unknown parameter(s) ['methds']"),
                        (dict(openai_api_key='x'), 'look like secrets')]:
        with pytest.raises(pm.PapermillExecutionError, match=re.escape(msg)):
            pm.execute_notebook(str(NB), str(tmp_path / 'x.ipynb'), parameters=params, cwd=str(NB.parent),
                                kernel_name='python3', progress_bar=False)


def test_notebook_parameter_list_matches_its_parameters_cell():
    "The set-up cell's PARAMETERS (used to refuse misspelt names) is the parameters cell, as papermill reads it."
    import papermill as pm
    nb = json.loads(NB.read_text())
    setup = next(''.join(c['source']) for c in nb['cells'] if 'PARAMETERS = [' in ''.join(c['source']))
    listed = ast.literal_eval(re.search(r"PARAMETERS = (\[.*?\])", setup, re.S).group(1))
    assert listed == list(pm.inspect_notebook(str(NB)))


def test_readme_commands_mean_what_they_say(monkeypatch):
    "Every `multiclust run`/`demo` command in README.md parses and gives the notebook the parameters README says."
    import shlex
    import multiclust.cli as cli
    readme = (REPO / 'README.md').read_text().splitlines()
    cmds = [shlex.split(m.group(1)) for l in readme if '`' not in l
            for m in [re.search(r'multiclust ((?:run|demo)\b[^#&]*)', l)] if m]
    assert len(cmds) >= 3 and any(c[0] == 'demo' for c in cmds) and any(c[0] == 'run' for c in cmds), cmds
    for argv in cmds:
        got = []
        monkeypatch.setattr(cli, 'cmd_run', lambda a: got.append((cli.run_parameters(a), a)) or 0)
        assert cli.main(argv) == 0, argv
        (params, a), = got
        assert set(params) <= set(cli.notebook_parameters()), argv
        if argv[0] == 'demo': assert params['quick'] is True and a.dataset == ['synthetic'], argv
        else: assert params['quick'] is ('--quick' in argv), argv          # no --quick: the full budgets
        if '--seeds' in argv: assert params['seeds'] == int(argv[argv.index('--seeds') + 1])
    for l in readme:                                  # README's papermill lines pass only the notebook's parameters
        if 'papermill nbs/05_ablation.ipynb' in l:
            assert set(re.findall(r'-p (\w+)', l)) <= set(cli.notebook_parameters()), l


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


def test_registered_dataset_missing_a_concept_column_skips_it(tmp_path, cars_root):
    "cars without its 'type' column: 'type' is reported as skipped with the reason, 'color' runs."
    src = pd.read_csv(cars_root / 'cars' / 'labels.csv').head(24)
    root = tmp_path / 'data'; (root / 'cars').mkdir(parents=True)
    (root / 'cars' / 'images').symlink_to(cars_root / 'cars' / 'images')      # read in place, never copied
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


def test_run_on_a_users_labelled_folder_by_relative_path(tmp_path, monkeypatch, capsys):
    "A user's folder (not registered), given relative to the working directory; one concept with its own prompt and words;"
    " results, figures and notebooks land in the working directory."
    root = _folder_dataset(tmp_path)
    (tmp_path / 'work').mkdir(); monkeypatch.chdir(tmp_path / 'work')
    rel = os.path.relpath(root, tmp_path / 'work')
    rc = cli_main(['run', '--dataset', rel, '--quick', '--no-progress', '--concept', 'color',
                   '--template', 'a shape with the color of *', '--words', 'red,green,blue,yellow,purple,orange',
                   '-p', 'methods=kmeans,zeroshot-gpt,multisub'] + FAST)
    text = capsys.readouterr().out
    assert rc == 0, text
    rows = json.loads((tmp_path / 'work' / 'results' / f'{root.name}.json').read_text())
    assert {(r['method'], r['concept']) for r in rows} == {('kmeans', 'color'), ('zeroshot-gpt', 'color'), ('multisub', 'color')}
    assert all(r['status'] == 'ok' for r in rows)
    assert all(r['word_source'].startswith('dataset spec') for r in rows if r['method'] != 'kmeans')
    assert (tmp_path / 'work' / 'out' / f'{root.name}.ipynb').exists() and (tmp_path / 'work' / 'figures').is_dir()
    # the same words from a multiclust.json beside labels.csv, every concept
    (root / 'multiclust.json').write_text(json.dumps({'object': 'shape', 'concepts': {
        'color': {'words': ['red', 'green', 'blue', 'yellow', 'purple', 'orange']},
        'shape': {'template': 'a * shape', 'words': ['circle', 'square', 'triangle', 'star', 'cross']}}}))
    rc = cli_main(['run', '--dataset', rel, '--quick', '--no-progress', '-p', 'methods=zeroshot-gpt'] + FAST)
    assert rc == 0, capsys.readouterr().out
    rows = [r for r in json.loads((tmp_path / 'work' / 'results' / f'{root.name}.json').read_text())
            if r['method'] == 'zeroshot-gpt']
    src = {r['concept']: r['word_source'] for r in rows}
    assert src['color'].startswith('dataset spec') and src['shape'].startswith('dataset spec') and set(src) >= {'size', 'background'}
