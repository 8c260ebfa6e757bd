"""Label-free K rules compared on the dev sets (a labelled check, not used to tune anything silently): silhouette
(Euclidean and cosine), Calinski-Harabasz, Davies-Bouldin and the count of Multi-Sub pseudo-labels holding >= 2/5/10%
of the images; one Multi-Sub fit per concept, seed 0. Usage:
  MULTICLUST_DATA=../shared/data python tools/k_rule_compare.py full synthetic:toyclip,cars:offline,cmuface:offline
Writes krules_<budgets>.csv in the working directory and prints hits and mean NMI cost per rule."""
import os, sys, time, json
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from multiclust.clip import load_encoder
from multiclust.data import load_dataset
from multiclust.features import extract_features
from multiclust.refwords import reference_words
from multiclust.metrics import nmi
from multiclust.core import kmeans
from multiclust.cluster import _run, _clustered, k_range
from sklearn.metrics import silhouette_score, calinski_harabasz_score, davies_bouldin_score
quick = sys.argv[1] == 'quick'; sets = sys.argv[2].split(',')
rows = []
for item in sets:
    name, encname = item.split(':')
    ds = load_dataset(name); enc = load_encoder(encname); feats = extract_features(enc, ds, progress=False)
    for c in ds.concepts:
        rw = reference_words(ds.spec.name, c); true = ds.label_ids(c); K = ds.n_clusters(c)
        s = 0; t0 = time.time()
        res = _run('multisub', enc, feats, ds.concept_spec(c).template, rw.words, rw.source, 2, s, quick, ds.name, c, {})
        X = np.asarray(_clustered(res, 'multisub'), dtype=np.float32); n_init = res.params.get('n_init', 10)
        ks = k_range(len(ds), len(rw.words)); labs = {k: kmeans(X, k, s, n_init) for k in ks}
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        sc = {'sil': {k: silhouette_score(X, l, sample_size=min(2000, len(X)), random_state=s) for k, l in labs.items()},
              'silcos': {k: silhouette_score(X, l, metric='cosine', sample_size=min(2000, len(X)), random_state=s) for k, l in labs.items()},
              'ch': {k: calinski_harabasz_score(X, l) for k, l in labs.items()},
              'db': {k: -davies_bouldin_score(X, l) for k, l in labs.items()}}
        pl = np.asarray(res.embeddings['pseudo_labels']); cnt = np.bincount(pl, minlength=len(rw.words)) / len(pl)
        picks = {r: max(v, key=lambda k: (v[k], -k)) for r, v in sc.items()}
        for thr in (0.02, 0.05, 0.1): picks[f'pseudo{thr}'] = int(np.clip((cnt >= thr).sum(), 2, ks[-1]))
        nt = nmi(true, labs[K]) if K in labs else nmi(true, kmeans(X, K, s, n_init))
        for r, k in picks.items():
            rows.append(dict(dataset=name, concept=c, true_k=K, rule=r, k=k, hit=k == K, nmi_true=nt,
                             nmi_rule=nmi(true, labs[k]), secs=time.time() - t0))
        print(name, c, K, picks, round(nt, 3), round(time.time() - t0, 1), flush=True)
df = pd.DataFrame(rows); df.to_csv(f'krules_{sys.argv[1]}.csv', index=False)
df['cost'] = df.nmi_true - df.nmi_rule
print(df.groupby('rule').agg(hits=('hit', 'sum'), n=('hit', 'size'), cost=('cost', 'mean')).to_string())
