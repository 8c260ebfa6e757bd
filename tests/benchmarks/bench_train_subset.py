"""Benchmark: Multi-Sub's full mode with a bounded training subset (`train_subset`, full mode's `TRAIN_SUBSET`) against
the whole-set fit, on the same images in one run (issue 23, item 2).

Per (concept, seed): the full-mode fit as the library runs it (selection on its 400-image subset, then the chosen
(lr, weight decay) trained on `train_subset` images and extended to every image: `multisub.extend_proxies`), and
the whole-set fit: the same chosen configuration trained on every image (what full mode did before; the selection
is the same in both by construction, so it runs once and is timed apart). Printed per pair: NMI of each (read only,
never used to choose anything), their difference, and the final fit's wall time of each. The summary says whether
the subset fit is within .02 NMI of the whole-set fit on average per concept and where it is not.

    OMP_NUM_THREADS=2 MULTICLUST_DATA=../shared/data python tests/benchmarks/bench_train_subset.py \\
        [--dataset synthetic --encoder toyclip] [--n 2000] [--train-subset 1000] [--seeds 0,1,2] [--concepts color]
        [--threads 2] [--out rows.jsonl]

`--dataset cards --encoder offline`: a seeded subset of `--n` images of a benchmark set. `--n 0` keeps all of it and
skips the whole-set fit (`--no-whole`), which times full mode on a large collection: the 10,000-image target.
`--out` appends each finished pair as one JSON line and skips pairs already there. Not collected by pytest.
"""
import argparse, json, os, time


def epochs(res) -> list:
    "Phase I epochs run per round (of at most `phase1_epochs`; fewer = the early stop ended it), and how the fit ended."
    rounds = [h['phase1_epochs_run'] for h in res.history if h.get('phase') == 'round']
    return rounds + (['settled'] if len(rounds) < res.params['rounds'] else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dataset', default='synthetic')
    ap.add_argument('--encoder', default='toyclip')
    ap.add_argument('--trunk', default='', help="the offline encoder's trunk (default: the encoder's default)")
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--train-subset', type=int, default=0, help='0: full mode\'s TRAIN_SUBSET')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--concepts', default='')
    ap.add_argument('--no-whole', action='store_true', help='time the subset fit only')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    ap.add_argument('--out', default='')
    a = ap.parse_args()
    import numpy as np, torch
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    from multiclust.multisub import MultiSub, TRAIN_SUBSET, candidate_configs
    from multiclust.metrics import nmi
    T = a.train_subset or TRAIN_SUBSET
    enc = load_encoder(a.encoder, **({'trunk': a.trunk} if a.trunk else {}))
    ds = load_dataset('synthetic', n=a.n) if a.dataset == 'synthetic' else load_dataset(a.dataset)
    t = time.perf_counter(); feats = extract_features(enc, ds, progress=True); ext = time.perf_counter() - t
    if a.dataset != 'synthetic' and a.n and len(ds) > a.n:      # the whole set's cached features, sliced
        idx = np.sort(np.random.default_rng(0).choice(len(ds), a.n, replace=False))
        ds, feats = ds.subset(idx, name=a.dataset), feats[torch.as_tensor(idx)]
    print(f"{a.dataset} ({len(ds)} images) [{enc.name}]: features {tuple(feats.shape)} in {ext:.0f}s "
          f"(from the cache when fast); train_subset={T}; threads {a.threads}", flush=True)
    done = set()
    if a.out and os.path.exists(a.out):
        done = {(r['dataset'], r['n_images'], r['encoder'], r['concept'], r['seed'], r['train_subset'])
                for r in map(json.loads, filter(str.strip, open(a.out)))}
    rows = []
    for c in [c for c in ds.concepts if not a.concepts or c in a.concepts.split(',')]:
        for s in [int(x) for x in a.seeds.split(',')]:
            if (a.dataset, len(ds), enc.name, c, s, T) in done: continue
            load = round(os.getloadavg()[0], 2)
            t0 = time.perf_counter()
            r = run_method('multisub', enc, ds, c, s, feats=feats, train_subset=T)
            wall = time.perf_counter() - t0
            sel = r.params['selection']
            row = dict(dataset=a.dataset, n_images=len(ds), encoder=enc.name, concept=c, seed=s, train_subset=T,
                       n_trained=r.params['n_trained'], chosen=sel['chosen'], selection_s=sel['selection_s'],
                       subset_fit_s=round(wall - sel['selection_s'], 1), full_mode_s=round(wall, 1),
                       nmi_subset=round(r.metrics['nmi'], 4), epochs_subset=epochs(r), threads=a.threads, load_before=load)
            if not a.no_whole:
                ms = MultiSub(enc)
                ms.grid = r.params['grid']
                cfg = next((g for g in candidate_configs(ms) if sel['chosen'] and g['lr_latent'] == sel['chosen']['lr']
                            and g['weight_decay'] == sel['chosen']['weight_decay']), {})
                t0 = time.perf_counter()
                w = run_method('multisub', enc, ds, c, s, feats=feats, select=None, train_subset=None, **cfg)
                row.update(whole_fit_s=round(time.perf_counter() - t0, 1), nmi_whole=round(w.metrics['nmi'], 4),
                           epochs_whole=epochs(w),
                           diff=round(r.metrics['nmi'] - w.metrics['nmi'], 4))
                row['fit_ratio'] = round(row['whole_fit_s'] / max(row['subset_fit_s'], 1e-9), 2)
            rows.append(row); print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n'); f.flush(); os.fsync(f.fileno())
    if a.out and os.path.exists(a.out):
        rows = [r for r in map(json.loads, filter(str.strip, open(a.out)))
                if (r['dataset'], r['n_images'], r['encoder'], r['train_subset']) == (a.dataset, len(ds), enc.name, T)]
    import pandas as pd
    df = pd.DataFrame(rows)
    if df.empty or 'diff' not in df: return print(df.to_string() if not df.empty else 'no rows')
    per = df.groupby('concept')[['nmi_whole', 'nmi_subset', 'diff', 'whole_fit_s', 'subset_fit_s']].mean()
    print(per.round(3).to_string())
    print(json.dumps(dict(dataset=a.dataset, n_images=len(ds), encoder=enc.name, train_subset=T, pairs=len(df),
                          worst_concept_mean_diff=round(float(per['diff'].min()), 4),
                          within_02=bool((per['diff'] >= -.02).all()),
                          fit_ratio_mean=round(float(df['fit_ratio'].mean()), 2))))


if __name__ == '__main__':
    main()
