"""Benchmark: the cost of Multi-Sub's full mode (`select='loss'`) on 1,000 cached toy-CLIP features, and whether a
cheaper selection (a smaller seeded subset for the candidates) picks the same configuration.

Per concept of `load_dataset('synthetic', n=1000)` (toy CLIP, shipped reference words), seed by seed: the full
mode as the library runs it (`MultiSub.FULL`) with each `select_subset` in `--subsets`; wall time of the whole
fit (selection + final fit), time of the candidates alone, the chosen (lr, weight decay), and the final NMI
(read only, never used to choose). Features are extracted (or read from the cache) before any timing.

    OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/bench_select.py [--subsets 1000,300] [--seeds 0]
        [--concepts color,shape,size,background] [--threads 2]

Target (issue 13): the full mode on 1,000 images in under 2 minutes on 2 cores. Not collected by pytest (file
name). The last line is one JSON object: per subset the mean wall time, the share of runs whose choice equals
the first subset's, and the mean NMI.
"""
import argparse, json, os, time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--subsets', default='1000,300', help='select_subset values; the first is the reference')
    ap.add_argument('--seeds', default='0')
    ap.add_argument('--concepts', default='color,shape,size,background')
    ap.add_argument('--n', type=int, default=1000, help='images of the synthetic set')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    enc = load_encoder('toyclip')
    ds = load_dataset('synthetic', n=a.n)
    feats = extract_features(enc, ds, progress=False)
    load0 = os.getloadavg()
    print(f"toy CLIP, synthetic n={len(ds)}, threads={a.threads}, cpus={os.cpu_count()}, load(1 min) {load0[0]:.2f}", flush=True)
    subsets = [int(s) for s in a.subsets.split(',')]
    rows = []
    for seed in [int(s) for s in a.seeds.split(',')]:
        for c in a.concepts.split(','):
            for sub in subsets:
                t = time.perf_counter()
                r = run_method('multisub', enc, ds, c, seed, feats=feats, select_subset=sub)
                wall = time.perf_counter() - t
                sel = r.params['selection']
                row = dict(concept=c, seed=seed, select_subset=sub, wall_s=round(wall, 1),
                           candidates_s=round(sum(x['runtime_s'] for x in sel['candidates']), 1),
                           chosen=sel['chosen'], nmi=round(r.metrics['nmi'], 4))
                rows.append(row); print(json.dumps(row), flush=True)
    ref = {(r['concept'], r['seed']): r['chosen'] for r in rows if r['select_subset'] == subsets[0]}
    summary = {}
    for sub in subsets:
        rs = [r for r in rows if r['select_subset'] == sub]
        summary[sub] = dict(mean_wall_s=round(sum(r['wall_s'] for r in rs) / len(rs), 1),
                            max_wall_s=max(r['wall_s'] for r in rs),
                            same_choice=f"{sum(r['chosen'] == ref[(r['concept'], r['seed'])] for r in rs)}/{len(rs)}",
                            mean_nmi=round(sum(r['nmi'] for r in rs) / len(rs), 4))
    load1 = os.getloadavg()
    print(json.dumps(dict(bench='select', n=len(ds), threads=a.threads, load_before=round(load0[0], 2),
                          load_after=round(load1[0], 2), per_subset=summary, target_s=120)))


if __name__ == '__main__':
    main()
