"""Quality table: k-means, zero-shot, Multi-Sub and Multi-Sub with random reference words on every dataset and concept.

    python tools/quality_table.py [--datasets cmuface cars cards] [--seeds 3] [--max-images N] [--encoder offline]

For every dataset under the data root ($MULTICLUST_DATA, else ../shared/data beside the checkout) and every
concept of it, with the offline encoder by default, over `--seeds` seeds:

- `kmeans-image`: k-means (K = the concept's class count) on the image embeddings g(F) of the frozen features;
- `zeroshot-words`: each image to the reference word whose prompt (the concept's template with the word at `*`)
  has the most similar text embedding (deterministic: the std over seeds is 0);
- `multi-sub`: `MultiSub.fit_features` with the cached reference words (labels = k-means on [w; v], K clusters);
- `multi-sub-random-words`: the same with as many random WordNet nouns (`random_nouns(n, seed)`) as a control.

Writes `results/quality_runs.csv` (one row per run) and `results/quality.csv` (NMI and RI mean and std per
dataset, concept and method), atomically, and prints the table in markdown. Features come from the feature
cache (the first run extracts them: cards takes minutes).
"""
import argparse, csv, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = ['kmeans-image', 'zeroshot-words', 'multi-sub', 'multi-sub-random-words']


def _root(arg):
    from multiclust.data import data_root
    if arg or os.environ.get('MULTICLUST_DATA'): return data_root(arg)
    return data_root(REPO.parent / 'shared' / 'data')


def _write_csv(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=keys); w.writeheader(); w.writerows(rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.unlink(tmp)


def zeroshot(encoder, feats, template, words):
    "Each image -> the reference word whose prompt embedding is most similar to its image embedding."
    import torch.nn.functional as F
    with torch.no_grad():
        v = F.normalize(encoder.project(feats), dim=-1)
        t = F.normalize(encoder.encode_text([template.replace('*', w) for w in words]), dim=-1)
        return (v @ t.T).argmax(-1).numpy()


def summarise(rows):
    out = {}
    for r in rows:
        out.setdefault((r['dataset'], r['concept'], r['method']), []).append(r)
    summ = []
    for (d, c, m), rs in out.items():
        nmi, ri = np.array([r['nmi'] for r in rs]), np.array([r['ri'] for r in rs])
        summ.append(dict(dataset=d, concept=c, method=m, k=rs[0]['k'], n_images=rs[0]['n_images'], seeds=len(rs),
                         nmi_mean=round(nmi.mean(), 4), nmi_std=round(nmi.std(), 4), ri_mean=round(ri.mean(), 4),
                         ri_std=round(ri.std(), 4), runtime_s_mean=round(np.mean([r['runtime_s'] for r in rs]), 2),
                         encoder=rs[0]['encoder'], weights=rs[0]['weights'], word_source=rs[0]['word_source'],
                         n_words=rs[0]['n_words'], status=','.join(sorted({r['status'] for r in rs}))))
    return summ


def markdown(summ, methods):
    cell = {(s['dataset'], s['concept'], s['method']): s for s in summ}
    keys = list(dict.fromkeys((s['dataset'], s['concept']) for s in summ))
    lines = []
    for metric in ('nmi', 'ri'):
        lines += [f"\n**{metric.upper()}** (mean ± std over seeds; best per row in bold)\n",
                  '| dataset | concept | K | N | ' + ' | '.join(methods) + ' |',
                  '|---|---|---|---|' + '---|' * len(methods)]
        for d, c in keys:
            vals = {m: cell.get((d, c, m)) for m in methods}
            best = max((v[f'{metric}_mean'] for v in vals.values() if v), default=None)
            fmt = lambda v: '–' if v is None else (('**%.3f**' if v[f'{metric}_mean'] == best else '%.3f') % v[f'{metric}_mean']
                                                  + ' ± %.3f' % v[f'{metric}_std'])
            any_ = next(v for v in vals.values() if v)
            lines.append(f"| {d} | {c} | {any_['k']} | {any_['n_images']} | " + ' | '.join(fmt(vals[m]) for m in methods) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--datasets', nargs='*', help='dataset folders under the data root (default: all with labels.csv)')
    ap.add_argument('--concepts', nargs='*', help='only these concepts (default: all)')
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--methods', nargs='*', default=METHODS, choices=METHODS)
    ap.add_argument('--root', help='data root (default $MULTICLUST_DATA, else ../shared/data)')
    ap.add_argument('--encoder', default='offline')
    ap.add_argument('--max-images', type=int, default=0,
                    help='cap each dataset at this many images (a fixed random subset, seed 0, the same for all methods); 0 = all')
    ap.add_argument('--rounds', type=int, default=None)
    ap.add_argument('--phase1-epochs', type=int, default=None)
    ap.add_argument('--phase2-epochs', type=int, default=None)
    ap.add_argument('--threads', type=int, default=int(os.environ.get('MULTICLUST_THREADS', 2)))
    ap.add_argument('--out', default=str(REPO / 'results'))
    ap.add_argument('--resume', action='store_true', help='keep the runs already in <out>/quality_runs.csv and skip them')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset, extract_features
    from multiclust.metrics import evaluate
    from multiclust.multisub import MultiSub, ClusterResult, kmeans
    from multiclust.refwords import reference_words, random_nouns

    root = _root(args.root)
    names = args.datasets or sorted(p.name for p in root.iterdir() if (p / 'labels.csv').is_file())
    enc = load_encoder(args.encoder)
    desc = enc.describe()
    ms_kw = {k: v for k, v in dict(rounds=args.rounds, phase1_epochs=args.phase1_epochs,
                                   phase2_epochs=args.phase2_epochs).items() if v is not None}
    print(f"encoder: {desc['encoder']} ({desc['weights']}); data root {root}; datasets {names}; seeds {args.seeds}; "
          f"threads {args.threads}; Multi-Sub {MultiSub(enc, **ms_kw).params}", flush=True)
    out = Path(args.out)
    rows = []
    if args.resume and (out / 'quality_runs.csv').is_file():
        import pandas as pd
        rows = pd.read_csv(out / 'quality_runs.csv').to_dict('records')
        print(f"resuming: {len(rows)} runs already in {out / 'quality_runs.csv'}", flush=True)
    done = {(r['dataset'], r['concept'], int(r['seed']), r['method']) for r in rows}
    for name in names:
        ds = load_dataset(name, root=root)
        t = time.perf_counter()
        feats = extract_features(enc, ds, progress=True)              # the whole set, cached; a subset indexes it
        if args.max_images and len(ds) > args.max_images:
            idx = np.sort(np.random.default_rng(0).choice(len(ds), args.max_images, replace=False))
            ds, feats = ds.subset(idx, name=ds.name), feats[torch.as_tensor(idx)]
        print(f"{name}: {len(ds)} images, features {tuple(feats.shape)} in {time.perf_counter() - t:.0f}s", flush=True)
        concepts = [c for c in ds.concepts if not args.concepts or c in args.concepts]
        for concept in concepts:
            true, k = ds.label_ids(concept), ds.n_clusters(concept)
            template = ds.concept_spec(concept).template
            rw = reference_words(ds.spec.name if ds.spec else name, concept)
            for seed in range(args.seeds):
                for method in args.methods:
                    if (name, concept, seed, method) in done: continue
                    t = time.perf_counter()
                    if method == 'kmeans-image':
                        with torch.no_grad(): lab = kmeans(enc.project(feats), k, seed)
                        r = ClusterResult(method, name, concept, k, seed, lab, encoder=desc, words=[], word_source='-')
                    elif method == 'zeroshot-words':
                        r = ClusterResult(method, name, concept, k, seed, zeroshot(enc, feats, template, rw.words),
                                          encoder=desc, words=rw.words, word_source=rw.source)
                    else:
                        words, source = (rw.words, rw.source) if method == 'multi-sub' else \
                                        (random_nouns(len(rw.words), seed), 'wordnet-random')
                        r = MultiSub(enc, seed=seed, text_embeddings=False, **ms_kw).fit_features(
                            feats, template, words, k, true, name, concept, source)
                        r.method = method
                    r.runtime_s = time.perf_counter() - t
                    r.metrics = {**(r.metrics or {}), **evaluate(true, r.labels)}
                    row = r.row()
                    rows.append(row)
                    print(f"  {name}/{concept} seed {seed} {method:24s} NMI {row['nmi']:.3f} RI {row['ri']:.3f} "
                          f"({row['runtime_s']:.1f}s{'' if r.status == 'ok' else ', ' + r.status})", flush=True)
                _write_csv(out / 'quality_runs.csv', rows)
                _write_csv(out / 'quality.csv', summarise(rows))
    summ = summarise(rows)
    _write_csv(out / 'quality.csv', summ)
    print(f"\nencoder: {desc['encoder']} — {desc['weights']}\n" + markdown(summ, args.methods))
    print(f"\nwrote {out / 'quality.csv'} and {out / 'quality_runs.csv'}")


if __name__ == '__main__':
    sys.exit(main())
