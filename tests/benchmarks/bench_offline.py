"""Benchmark: the offline encoder with the CNN in its trunk (`trunk='cnn'`) against the default one
(`trunk='conse'`: the ConSE vector cached as the frozen feature), on the benchmark sets in $MULTICLUST_DATA.

Per dataset x concept x encoder: k-means, zero-shot with the shipped reference words, Multi-Sub and its
random-word control, all through `run_method` (as chapter 05 runs them), mean NMI over the seeds, in one run.
Also the k-means NMI on the raw trunk features (the chapter 00 argument) and extraction images/s per encoder.

    MULTICLUST_DATA=../shared/data OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/bench_offline.py \\
        [--datasets cmuface,cars,cards] [--seeds 0,1,2] [--quick] [--max-images 0] [--concepts identity,glass]
        [--out rows.jsonl]

The full benchmark is about a day of two-core CPU (one full-mode Multi-Sub fit on cars' 333 images took 757 s), so
`--out` keeps every finished row (one JSON line each, flushed and fsynced as it is written) and a rerun with the
same file skips the rows it already holds: an interrupted run, or one split over sessions, loses nothing.

Targets (issue 17): Multi-Sub >= k-means and >= its random-word control + .05 on every concept where zero-shot
beats chance (NMI > .02 here), and no concept where the new encoder loses more than .02 NMI to the old one for any
method. Not collected by pytest (file name). The last line is one JSON object with the means and the targets.
"""
import argparse, json, os, time

METHODS = ['kmeans', 'zeroshot-gpt', 'multisub', 'multisub-randwords']
_key = lambda r: (r['dataset'], r['concept'], r['encoder'], r['method'], r['seed'], r.get('quick'), r.get('max_images', 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--datasets', default='cmuface,cars,cards')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--quick', action='store_true', help='quick budgets (default: full mode, as the library runs it)')
    ap.add_argument('--concepts', default='', help='comma list of concepts (empty: every concept of each dataset)')
    ap.add_argument('--max-images', type=int, default=0, help='a seeded subset per dataset (0: all)')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    ap.add_argument('--out', default='', help='JSON-lines file of finished rows: appended to, and read to resume')
    a = ap.parse_args()
    import numpy as np, torch
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset, extract_features
    from multiclust.methods import run_method
    from multiclust.core import kmeans
    from multiclust.metrics import evaluate
    t_all = time.perf_counter()
    encs = {'new (cnn trunk)': load_encoder('offline', trunk='cnn'), 'old (conse trunk)': load_encoder('offline', trunk='conse')}
    seeds = [int(s) for s in a.seeds.split(',')]
    import subprocess
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    done = {}
    if a.out and os.path.exists(a.out):
        for line in open(a.out):
            if line.strip():
                r = json.loads(line); done[_key(r)] = r
        print(f"{a.out}: {len(done)} finished rows read; they are not run again", flush=True)
        other = sorted({str(r.get('commit')) for r in done.values()} - {str(commit)})
        if other: print(f"note: rows in {a.out} come from other commits too ({', '.join(other)}; now {commit})", flush=True)
    def record(row):
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n'); f.flush(); os.fsync(f.fileno())
    rows = []
    for name in a.datasets.split(','):
        ds = load_dataset(name)
        if a.max_images and len(ds) > a.max_images:
            ds = ds.subset(np.sort(np.random.default_rng(0).choice(len(ds), a.max_images, replace=False)), name=name)
        for ename, enc in encs.items():
            t = time.perf_counter(); feats = extract_features(enc, ds, progress=False); ext = time.perf_counter() - t
            print(f"{name} [{ename}]: features {tuple(feats.shape)} in {ext:.0f}s (from the cache when fast)", flush=True)
            X = torch.nn.functional.normalize(feats.float(), dim=1).numpy()
            for c in [c for c in ds.concepts if not a.concepts or c in a.concepts.split(',')]:
                raw = evaluate(ds.label_ids(c), kmeans(X, ds.n_clusters(c), 0))['nmi']
                rows.append(dict(dataset=name, concept=c, encoder=ename, method='kmeans-on-trunk', seed=0, nmi=raw))
                for s in seeds:
                    for m in METHODS:
                        key = _key(dict(dataset=name, concept=c, encoder=ename, method=m, seed=s, quick=a.quick,
                                        max_images=a.max_images))
                        if key in done: rows.append(done[key]); continue
                        t = time.perf_counter()
                        r = run_method(m, enc, ds, c, s, feats=feats, quick=a.quick)
                        sel = r.params.get('selection') or {}
                        rows.append(dict(dataset=name, concept=c, encoder=ename, method=m, seed=s, nmi=r.metrics['nmi'],
                                         status=r.status, runtime_s=round(time.perf_counter() - t, 1), quick=a.quick,
                                         max_images=a.max_images, threads=a.threads, chosen=sel.get('chosen'), commit=commit))
                        record(rows[-1])
    import pandas as pd
    df = pd.DataFrame(rows)
    mean = df.groupby(['dataset', 'concept', 'encoder', 'method'])['nmi'].mean().unstack('method')
    print(mean.round(3).to_string())
    targets = []
    for (d, c), g in mean.groupby(level=[0, 1]):
        new, old = g.xs('new (cnn trunk)', level='encoder').iloc[0], g.xs('old (conse trunk)', level='encoder').iloc[0]
        named = new['zeroshot-gpt'] > .02
        targets.append(dict(dataset=d, concept=c, zeroshot_beats_chance=bool(named),
                            multisub_ge_kmeans=bool(new['multisub'] >= new['kmeans']) if named else None,
                            multisub_ge_randwords_plus_05=bool(new['multisub'] >= new['multisub-randwords'] + .05) if named else None,
                            worst_loss_vs_old=round(float((old[METHODS] - new[METHODS]).max()), 3)))
    print(json.dumps(dict(means={f"{d}/{c}/{e}": {m: round(float(v), 3) for m, v in r.items()} for (d, c, e), r in mean.iterrows()},
                          targets=targets, quick=a.quick, seeds=seeds, wall_s=round(time.perf_counter() - t_all, 1))))


if __name__ == '__main__':
    main()
