"""Benchmark: would successive halving pick the configuration the exhaustive selection picks, for less?

(The question that led to `select='halving'`, issue 23; `bench_select_cost.py` measures the built one.)
Per concept x seed of `load_dataset('synthetic', n=1000)` (toy CLIP, shipped reference words): the library's
exhaustive full mode (`select='exhaustive'`: 24 candidates of the paper's lr x weight-decay grid, 3 rounds each, on
the seeded 400-image subset), then every
candidate once more for its first round only (`rounds=1`, the same subset and seed: the same first round). Printed:
where the 3-round winner ranks by the first round's relative loss, the first round's share of the candidates'
time, and for each `keep` whether keeping only the `keep` best after round 1 would have chosen the same.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_halving.py [--seeds 0,1] [--concepts color,shape,size,background]

Not collected by pytest (file name). The last line is one JSON object.
"""
import argparse, json, math, os, time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='0,1')
    ap.add_argument('--concepts', default='color,shape,size,background')
    ap.add_argument('--keep', default='2,3,4,6')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    from multiclust.multisub import MultiSub, selection_subset, candidate_configs
    from multiclust.refwords import reference_words
    enc = load_encoder('toyclip'); ds = load_dataset('synthetic', n=1000); feats = extract_features(enc, ds, progress=False)
    ok = lambda c, s, col: c['status'] == 'ok' and not c[col] and math.isfinite(c[s])
    rows = []
    for seed in [int(s) for s in a.seeds.split(',')]:
        for c in a.concepts.split(','):
            r = run_method('multisub', enc, ds, c, seed, feats=feats, select='exhaustive')   # the library's old full mode
            sel = r.params['selection']
            full = MultiSub(enc, **{**MultiSub.FULL, 'seed': seed})
            idx = selection_subset(len(feats), seed, full.select_subset)          # the library's subset and grid
            sub, words, t = feats if idx is None else feats[idx], reference_words('synthetic', c).words, time.perf_counter()
            assert len(sub) == sel['n_images']
            cands = []
            for cand, cfg in zip(sel['candidates'], candidate_configs(full)):
                lr, wd = cand['lr'], cand['weight_decay']
                assert (lr, wd) == (cfg['lr_latent'], cfg['weight_decay'])
                kw = {**MultiSub.FULL, 'select': None, 'select_subset': None, 'rounds': 1, **cfg, 'seed': seed,
                      'text_embeddings': False, 'eval_rounds': False, 'diagnostics': False, 'sparse_proxies': 'auto'}
                m = MultiSub(enc, **kw).fit_features(sub, r.params['template'], words, ds.n_clusters(c))
                cands.append(dict(lr=lr, weight_decay=wd, score1=m.params['score'], status=m.status,
                                  collapsed1=m.params['collapsed'], score3=cand['score'], collapsed3=cand['collapsed']))
            t1 = time.perf_counter() - t
            best3 = min([x for x in cands if ok(x, 'score3', 'collapsed3')], key=lambda x: x['score3'])
            order = sorted([x for x in cands if ok(x, 'score1', 'collapsed1')], key=lambda x: x['score1'])
            rank = next((i + 1 for i, x in enumerate(order) if x is best3), None)
            row = dict(concept=c, seed=seed, chosen=sel['chosen'], winner_rank_after_round1=rank,
                       round1_share=round(t1 / sum(x['runtime_s'] for x in sel['candidates']), 3))
            rows.append(row); print(json.dumps(row), flush=True)
    keeps = [int(k) for k in a.keep.split(',')]
    same = {k: f"{sum(r['winner_rank_after_round1'] is not None and r['winner_rank_after_round1'] <= k for r in rows)}/{len(rows)}"
            for k in keeps}
    print(json.dumps(dict(bench='halving', n=len(ds), threads=a.threads, same_choice_if_keep=same,
                          mean_round1_share=round(sum(r['round1_share'] for r in rows) / len(rows), 3))))


if __name__ == '__main__':
    main()
