"""Re-execute the book in place, so every chapter keeps its outputs; or check that every chapter has them.

    python tools/run_book.py [NB ...]          execute notebooks, save their outputs into the same files
    python tools/run_book.py --check [NB ...]  run nothing: exit 1 naming every notebook without outputs or with an error

Why: a chapter should show its figures, tables and printed values where JupyterLab and GitHub show them,
and those outputs must come from nothing but executing the notebook as committed, with its default (fast)
parameters. So this script runs each notebook exactly as `nbdev_test` does (nbdev 2.4.14, nbdev/test.py
`test_nb`) and writes what the cells printed and displayed back into the file:

- the code that runs is what nbdev_test runs: nbdev's `NBProcessor` + `FrontmatterProc` (directive comments
  stripped), in execnb's `CaptureShell`, with the notebook's folder as working directory, the repository on
  `sys.path` and `IN_TEST=1`; a notebook whose frontmatter says `skip_exec` (or that is not Python) is left alone;
- a cell nbdev_test skips is not run and keeps no output: `#| eval: false`, a `#|` directive naming one of
  settings.ini's `tst_flags` (here `notest slow`), a cell calling `nbdev_export(`; the rule is copied from
  `_no_eval` in `test_nb` (a closure there, so it cannot be imported); every old output is dropped first;
- what is written is the committed source with the new outputs, cleaned by nbdev's own `clean_nb` with
  settings.ini's options (what `nbdev_clean` does), so `nbdev_clean` afterwards has nothing to change; with
  `clear_all` False (nbdev's default, and ours) nbdev_clean keeps outputs, and this script refuses to run otherwise;
- a notebook is written only if every cell it runs succeeds (temporary file in the same folder, then
  `os.replace`), and only if the file did not change on disk while it ran (someone editing it in JupyterLab);
- each notebook runs in a fresh interpreter, so its outputs (first-import warnings, ...) do not depend on
  which notebooks ran before it in the same call.

On the first error in a notebook it prints the notebook, the cell and the traceback, leaves that file
unchanged, and GOES ON with the next notebook; it exits 1 at the end if any failed.

Environment, as tools/test.sh sets it: MPLBACKEND=Agg, TOKENIZERS_PARALLELISM=false, OMP/MKL_NUM_THREADS 2
unless set, MULTICLUST_DATA ../shared/data (next to the repository) unless set (set but empty: no data root), and
a fresh MULTICLUST_CACHE removed at the end (never ~/.cache/multiclust) unless `--cache DIR`. Progress bars are
off (TQDM_DISABLE=1, HF_HUB_DISABLE_PROGRESS_BARS=1) unless `--progress`; TQDM_DISABLE only changes tqdm's
default, so a bar whose code passes `disable=` explicitly (multiclust's `progress=True`) still shows.

`--check` reads the notebooks' JSON only (fast, for CI): every notebook needs at least one output, no output of
type `error`, and no printed 'Traceback'. Default notebooks for both: nbs/*.ipynb, sorted, except names
starting with `_` or `.`.
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def notebooks(root: Path, names: list[str]) -> list[Path]:
    "The notebooks named (a path, or a name in nbs/), else every nbs/*.ipynb not starting with `_` or `.`."
    if not names: return sorted(p for p in (root/'nbs').glob('*.ipynb') if p.name[0] not in '_.')
    paths = [p if p.exists() else root/'nbs'/p.name for p in map(Path, names)]
    if missing := [str(p) for p in paths if not p.exists()]: sys.exit(f"no such notebook: {' '.join(missing)}")
    return [p.resolve() for p in paths]


# ---- --check ----------------------------------------------------------------------------------------------
def problems(path: Path) -> list[str]:
    "What is wrong with the outputs saved in `path`: none at all, an error, or a printed traceback."
    cells = json.loads(path.read_text(encoding='utf-8'))['cells']
    res, n = [], 0
    for i, c in enumerate(cells):
        for o in c.get('outputs', []):
            n += 1
            if o['output_type'] == 'error':
                res.append(f"{path.name}: cell {i}: error output {o.get('ename')}: {o.get('evalue')}")
            if o['output_type'] == 'stream' and 'Traceback' in ''.join(o.get('text', [])):
                res.append(f"{path.name}: cell {i}: a traceback in its printed output")
    if not n: res.append(f"{path.name}: no outputs (execute it with tools/run_book.py)")
    return res


# ---- execution (runs in a fresh interpreter per notebook) ---------------------------------------------------
def _skipped(cell, flags: set) -> bool:
    "True if nbdev_test does not run `cell` (nbdev/test.py `test_nb`'s `_no_eval`, for a code cell)."
    if 'nbdev_export'+'(' in cell.source: return True
    direc = getattr(cell, 'directives_', {}) or {}
    if direc.get('eval:', [''])[0].lower() == 'false': return True
    return bool(flags & direc.keys())


def execute(fn: Path) -> dict:
    """Run `fn` as nbdev_test does and, if no cell fails, save its outputs in it.
    Returns {'outputs': n}, {'skipped': why} or {'error': text}."""
    from execnb.nbio import read_nb, nb2dict, nb2str
    from execnb.shell import CaptureShell, format_exc
    from fastcore.basics import str2bool
    from nbdev.config import get_config
    from nbdev.process import NBProcessor, nb_lang
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.clean import clean_nb

    cfg = get_config()                                   # settings.ini, found from the cwd (the repository root)
    sys.path.insert(0, str(cfg.config_path))             # test_nb's `basepath`
    flags = set(cfg.tst_flags.split())
    before = fn.read_bytes()
    nb = read_nb(fn)                                     # what is written: the committed source, new outputs
    run = NBProcessor(fn, procs=FrontmatterProc, process=True).nb    # what nbdev_test executes
    if str2bool(getattr(run, 'frontmatter_', {}).get('skip_exec', False)): return {'skipped': 'skip_exec frontmatter'}
    if nb_lang(run) != 'python': return {'skipped': f'language {nb_lang(run)}'}
    code = [c for c in nb.cells if c.cell_type == 'code']
    torun = [c for c in run.cells if c.cell_type == 'code']   # FrontmatterProc only drops/adds raw and markdown cells
    assert len(code) == len(torun), "nbdev's processor changed the number of code cells"
    for c in code: c.outputs, c.execution_count = [], None

    shell = CaptureShell(fn, mpl_format='png')          # puts fn's folder on sys.path; plain PNG: a quarter of retina's bytes
    os.chdir(fn.parent)
    for j, (c, r) in enumerate(zip(code, torun)):
        if _skipped(r, flags): continue
        c.outputs = shell.run(r.source)
        if shell.exc is not None:
            first = (c.source.strip().splitlines() or [''])[0]
            return {'error': f"cell {c.idx_} (code cell {j}), starting `{first}`:\n" + ''.join(format_exc(shell.exc))}

    d = nb2dict(nb)
    clean_nb(d, cfg.clear_all, cfg.get('allowed_metadata_keys').split(), cfg.get('allowed_cell_metadata_keys').split(),
             cfg.clean_ids)                               # = nbdev_clean on the written file (nbdev/clean.py `_nbdev_clean`)
    text = nb2str(d)
    if fn.read_bytes() != before: return {'error': 'the file changed on disk while it ran'}
    if text.encode('utf-8') != before:
        from multiclust.files import atomic_write_text       # the library's one writer: whole or not at all
        atomic_write_text(fn, text, keep_mode=True)
    return {'outputs': sum(len(c.get('outputs', [])) for c in d['cells'])}


def run_book(paths: list[Path], root: Path, cache: str | None, progress: bool) -> int:
    from nbdev.config import get_config
    if get_config().clear_all: sys.exit("settings.ini sets clear_all: nbdev_clean would delete every output")
    env = os.environ
    env.update(MPLBACKEND='Agg', TOKENIZERS_PARALLELISM='false', IN_TEST='1')
    for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'): env.setdefault(k, '2')
    env.setdefault('MULTICLUST_DATA', str(root.parent/'shared'/'data'))
    if not progress: env.update(TQDM_DISABLE='1', HF_HUB_DISABLE_PROGRESS_BARS='1')
    env['MULTICLUST_CACHE'] = cache or tempfile.mkdtemp(prefix='multiclust-book-cache.')
    print(f"== cache: {env['MULTICLUST_CACHE']}{'' if cache else ' (fresh, removed at the end)'}; "
          f"data root: {env['MULTICLUST_DATA'] or '(none)'}", flush=True)
    failed = []
    try:
        for p in paths:
            t = time.time()
            try:
                with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as ex: res = ex.submit(execute, p).result()
            except Exception as e: res = {'error': f'{type(e).__name__}: {e} {e.__cause__ or ""}'}   # e.g. killed
            secs = f'{time.time() - t:7.1f} s'
            if 'error' in res:
                failed.append(p.name)
                print(f"{p.name:36} {secs}  FAILED, not written: {res['error']}", file=sys.stderr, flush=True)
            elif 'skipped' in res: print(f"{p.name:36} {secs}  not executed ({res['skipped']}), file unchanged", flush=True)
            else: print(f"{p.name:36} {secs}  {res['outputs']:4} outputs", flush=True)
    finally:
        if not cache: shutil.rmtree(env['MULTICLUST_CACHE'], ignore_errors=True)
    if failed: print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('nbs', nargs='*', metavar='NB', help='notebooks (default: every nbs/*.ipynb not starting with _ or .)')
    ap.add_argument('--check', action='store_true', help='run nothing; exit 1 listing notebooks without outputs or with errors')
    ap.add_argument('--cache', metavar='DIR', help='MULTICLUST_CACHE to use and keep (default: a fresh folder, removed)')
    ap.add_argument('--progress', action='store_true', help='leave progress bars on (they end up in the outputs)')
    ap.add_argument('--root', type=Path, default=REPO, help='repository root: settings.ini and nbs/ (default: %(default)s)')
    a = ap.parse_args()
    root = a.root.resolve()
    paths = notebooks(root, a.nbs)
    if a.check:
        bad = [m for p in paths for m in problems(p)]
        if bad: print('\n'.join(bad), file=sys.stderr)
        else: print(f'{len(paths)} notebooks, all with outputs and no errors')
        return 1 if bad else 0
    if a.cache: Path(a.cache).mkdir(parents=True, exist_ok=True)
    cache = str(Path(a.cache).resolve()) if a.cache else None
    os.chdir(root)                                          # nbdev's get_config finds settings.ini from here
    return run_book(paths, root, cache, a.progress)


if __name__ == '__main__': sys.exit(main())
