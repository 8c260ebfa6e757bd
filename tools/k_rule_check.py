"""How often the label-free K rule of multiclust.cluster (largest silhouette) picks the true K, and the NMI it costs.
One Multi-Sub fit per (dataset, concept, seed) (full budgets as `multiclust cluster --thorough`, or --budgets quick as its default; training
does not depend on K), then the method's
k-means at the true K and at the rule's K on the same embedding. Usage:
  MULTICLUST_DATA=../shared/data python tools/k_rule_check.py [--seeds 2] [--budgets full|quick] [--out results/k_rule.csv]"""
import argparse, os, sys, time
import numpy as np, pandas as pd, torch

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--seeds', type=int, default=1); ap.add_argument('--out', default='results/k_rule.csv')
    ap.add_argument('--sets', default='synthetic:toyclip,cmuface:offline,cars:offline'); ap.add_argument('--method', default='multisub')
    ap.add_argument('--budgets', choices=['full', 'quick'], default='full')
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.refwords import reference_words
    from multiclust.metrics import nmi
    from multiclust.core import kmeans
    from multiclust.cluster import _run, _clustered, choose_k, k_range
    rows = []
    for item in a.sets.split(','):
        name, encname = item.split(':')
        try: ds = load_dataset(name)
        except Exception as e: print('skip', name, e); continue
        enc = load_encoder(encname); feats = extract_features(enc, ds, progress=False)
        for c in ds.concepts:
            rw = reference_words(ds.spec.name, c); true = ds.label_ids(c); K = ds.n_clusters(c)
            for s in range(a.seeds):
                t0 = time.time()
                res = _run(a.method, enc, feats, ds.concept_spec(c).template, rw.words, rw.source, 2, s, a.budgets == 'quick', ds.name, c, {})
                X = _clustered(res, a.method); n_init = res.params.get('n_init', 10)
                ks = k_range(len(ds), len(rw.words))
                k, sc = choose_k(X, ks, s, n_init)
                n_true, n_rule = nmi(true, kmeans(X, K, s, n_init)), nmi(true, kmeans(X, k, s, n_init))
                rows.append(dict(dataset=name, encoder=enc.name, budgets=a.budgets, concept=c, seed=s, true_k=K, rule_k=k, hit=k == K,
                                 k_in_range=K in ks, nmi_true_k=round(n_true, 4), nmi_rule_k=round(n_rule, 4),
                                 nmi_cost=round(n_true - n_rule, 4), seconds=round(time.time() - t0, 1)))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows); os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True); df.to_csv(a.out, index=False)
    print(df.to_string(index=False))
    print(f"hit rate {df.hit.mean():.2f} ({df.hit.sum()}/{len(df)}); mean NMI cost over misses "
          f"{df.nmi_cost[~df.hit].mean():.4f}; mean NMI cost overall {df.nmi_cost.mean():.4f}")

if __name__ == '__main__': main()
