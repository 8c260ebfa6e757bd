"""Benchmark (issue 27): does Multi-DProxy learn, and what does each component do? NMI per variant x concept on the
embedded `synthetic` set (360 images) with the toy CLIP and the shipped words, seeds 0-2, all through `run_method`.

Variants:
- `kmeans`, `zeroshot-gpt`: the floors (k-means on the image embeddings; zero-shot with the same 12 base words);
- `full`: the registry's full mode (`MultiDProxy.FULL`: lr chosen by relative loss, keep-best, early stop);
- `quick`: command 1's budget (`MultiDProxy.QUICK`);
- `no-fusion` (plain concatenation [proxy; image]), `no-user-interest`, `no-concept` (no hard negatives),
  `fixed-candidates` (no pruning): the full mode with one component off;
- `v1`: the first reading (`MultiDProxy.V1`, full mode without selection), and `v1+<fix>`: it with one part of the
  new design, to say which part made it worse than zero-shot.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_dproxy.py [--seeds 0,1,2] [--variants ...]
        [--out rows.csv] [--figure figures/dproxy_ablation_synthetic_toyclip.png]

Not collected by pytest (file name). Each row is printed as it comes; the last line is one JSON object: the mean NMI
per variant x concept, the issue's targets and whether each holds, and the wall time.
"""
import argparse, json, os, time

ABLATIONS = {'no-fusion': dict(fusion=False), 'no-user-interest': dict(user_interest=None),
             'no-concept': dict(concept_on=None), 'fixed-candidates': dict(dynamic=False)}
V1_FIXES = {'v1+score-mass': dict(score='mass'), 'v1+base-start': dict(start='base', prune_every=5, score='mass'),
            'v1+train-projection': dict(train_projection=True, query='uniform', tau_alpha=1.0, lr_proxy=5e-2,
                                        align='proxy'),
            'v1-user-interest': dict(user_interest=None), 'v1-pruning': dict(dynamic=False)}
VARIANTS = ['kmeans', 'zeroshot-gpt', 'full', 'quick', *ABLATIONS, 'v1', *V1_FIXES]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--concepts', default='color,shape,size,background')
    ap.add_argument('--variants', default=','.join(VARIANTS))
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='')
    ap.add_argument('--figure', default='')
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    import pandas as pd
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    from multiclust.dproxy import MultiDProxy
    t0 = time.perf_counter()
    enc = load_encoder('toyclip')
    ds = load_dataset('synthetic')
    feats = extract_features(enc, ds, progress=False)
    seeds, concepts, variants = [int(s) for s in a.seeds.split(',')], a.concepts.split(','), a.variants.split(',')
    bad = [v for v in variants if v not in VARIANTS]
    if bad: raise SystemExit(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    rows = []
    for seed in seeds:
        for c in concepts:
            for v in variants:
                t = time.perf_counter()
                if v in ('kmeans', 'zeroshot-gpt'): r = run_method(v, enc, ds, c, seed, feats=feats)
                elif v == 'quick': r = run_method('multidproxy', enc, ds, c, seed, feats=feats, quick=True)
                elif v == 'full': r = run_method('multidproxy', enc, ds, c, seed, feats=feats)
                elif v in ABLATIONS: r = run_method('multidproxy', enc, ds, c, seed, feats=feats, **ABLATIONS[v])
                else:
                    kw = {**MultiDProxy.V1, 'select': None, **V1_FIXES.get(v, {})}
                    r = run_method('multidproxy', enc, ds, c, seed, feats=feats, **kw)
                row = dict(variant=v, concept=c, seed=seed, nmi=round(r.metrics['nmi'], 4), seconds=round(time.perf_counter() - t, 2))
                if r.method == 'multi-dproxy':
                    kept = next((h['epoch'] for h in r.history if h.get('event') == 'restored'), None)
                    row.update(kept_epoch=kept, n_candidates_final=r.params['n_candidates_final'],
                               chosen=(r.params.get('selection') or {}).get('chosen'),
                               kept_words=','.join(r.params['kept_words'][:6]))
                rows.append(row)
                print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
        df.to_csv(a.out, index=False)
    mean = df.groupby(['variant', 'concept'])['nmi'].mean().unstack().reindex(columns=concepts)
    std = df.groupby(['variant', 'concept'])['nmi'].std(ddof=0).unstack().reindex(columns=concepts)
    mean = mean.reindex([v for v in variants if v in mean.index])
    print(mean.round(3).to_string())
    M = lambda v: mean.loc[v] if v in mean.index else None
    targets = {}
    for v in ('full', 'quick'):
        if M(v) is None: continue
        if M('zeroshot-gpt') is not None:
            above = [c for c in concepts if M(v)[c] >= M('zeroshot-gpt')[c]]
            targets[f'{v}_ge_zeroshot_on_3_of_4'] = dict(concepts=above, holds=len(above) >= min(3, len(concepts)))
        if M('kmeans') is not None:
            targets[f'{v}_above_kmeans_everywhere'] = {c: bool(M(v)[c] > M('kmeans')[c]) for c in concepts}
    if a.figure:
        from multiclust.report import _plt
        plt = _plt()
        show = [v for v in variants if v in mean.index]
        fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(show)), 3.6))
        w = 0.8 / len(concepts)
        for j, c in enumerate(concepts):
            xs = [i + (j - (len(concepts) - 1) / 2) * w for i in range(len(show))]
            ax.bar(xs, mean.loc[show, c], w, yerr=std.loc[show, c], label=c, color=f'C{j}', capsize=2)
        ax.set_xticks(range(len(show))); ax.set_xticklabels(show, rotation=30, ha='right', fontsize=8)
        ax.set_ylabel('NMI (mean over seeds)'); ax.set_ylim(0, 1.05); ax.legend(fontsize=8, ncol=len(concepts))
        ax.set_title(f"Multi-DProxy per component: toy CLIP, synthetic, seeds {a.seeds}", fontsize=10)
        fig.tight_layout()
        os.makedirs(os.path.dirname(a.figure) or '.', exist_ok=True)
        fig.savefig(a.figure, dpi=120)
    print(json.dumps(dict(bench='dproxy', dataset='synthetic', encoder='toyclip', seeds=seeds, threads=a.threads,
                          mean_nmi={v: {c: round(float(x), 4) for c, x in mean.loc[v].items()} for v in mean.index},
                          targets=targets, wall_s=round(time.perf_counter() - t0, 1))))


if __name__ == '__main__':
    main()
