"""Benchmark (issue 26, item 1): which half of Multi-Sub's final embedding carries the concept on real photos, and what
training does to the image half.

Per (dataset, concept, trunk, seed): one Multi-Sub fit as the library runs it (`run_method('multisub', ...)`, full
mode unless `--quick`), then k-means (K = the concept's classes, the fit's seed and `n_init`) on each embedding it
has or starts from, scored against the labels (a diagnostic: nothing here is chosen by it):
- `trunk`: the frozen trunk features (chapter 00's argument);
- `image0`: the pretrained projection of them (what the k-means baseline clusters);
- `image`: the projected image half after training; `token`: the proxy-token half; `prompt`: the proxies' prompts;
- `final`: the fit's own clustering (`final_rule`: 'balanced' or, since issue 26, 'trust');
- `balanced`: the balanced [token; image] embedding (the final embedding before issue 26);
- `zeroshot`: each image's nearest word prompt (the same words and template), no k-means.
Also each embedding's spread and effective rank, the image half's spread and effective rank per epoch (first, last,
lowest) and the Phase I epochs per round. `--save DIR` keeps the embeddings (npz) for label-free rules to be tried on
them without refitting. `--out` appends one JSON line per fit and skips fits already there. Not collected by pytest.

    MULTICLUST_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_halves.py \\
        --datasets cars,cmuface --trunk cnn --seeds 0 --threads 1 --out tests/benchmarks/rows/halves.jsonl \\
        --save results/halves
"""
import argparse, json, os, time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--datasets', default='cars,cmuface')
    ap.add_argument('--concepts', default='')
    ap.add_argument('--trunk', default='cnn', help="the offline encoder's trunk: 'cnn' or 'conse'")
    ap.add_argument('--encoder', default='offline', help="'offline' (with --trunk) or 'toyclip' (dataset synthetic)")
    ap.add_argument('--seeds', default='0')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    ap.add_argument('--out', default='')
    ap.add_argument('--save', default='', help='folder for one npz of embeddings per fit')
    ap.add_argument('--figure', default='', help='with --rules: a bar chart of the means, saved here')
    ap.add_argument('--rules', action='store_true',
                    help="run nothing: the final embeddings 'balanced' and 'trust' of every full-mode fit saved in --save")
    ap.add_argument('--powers', default='',
                    help="with --rules: also trust shares (1 - rho)**p for these p (a labelled dev sweep, e.g. 1.5,2,3)")
    a = ap.parse_args()
    if a.rules: return print(rules(a.save, a.figure, [float(p) for p in a.powers.split(',') if p]))
    import torch, subprocess
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    from multiclust.multisub import MultiSub
    final = (MultiSub.QUICK if a.quick else MultiSub.FULL).get('final', 'balanced')   # the rule today's code runs
    enc = load_encoder('offline', trunk=a.trunk) if a.encoder == 'offline' else load_encoder(a.encoder)
    ename = a.trunk if a.encoder == 'offline' else a.encoder
    done = set()
    if a.out and os.path.exists(a.out):
        done = {(r['dataset'], r['concept'], r['encoder'], r['seed'], r['quick'], r.get('final_rule', 'balanced'))
                for r in map(json.loads, open(a.out)) if r.get('method', 'multisub') == 'multisub'}
    for name in a.datasets.split(','):
        ds = load_dataset(name)
        feats = extract_features(enc, ds, progress=False)
        for c in [c for c in ds.concepts if not a.concepts or c in a.concepts.split(',')]:
            for s in [int(x) for x in a.seeds.split(',')]:
                if (name, c, ename, s, a.quick, final) in done: continue
                load = round(os.getloadavg()[0], 2)
                t = time.perf_counter()
                res = run_method('multisub', enc, ds, c, s, feats=feats, quick=a.quick)
                row = halves(enc, ename, ds, c, feats, res, a.save)
                row.update(runtime_s=round(time.perf_counter() - t, 1), threads=a.threads, load_before=load, commit=commit)
                print(json.dumps(row), flush=True)
                if a.out:
                    with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n'); f.flush(); os.fsync(f.fileno())


def halves(enc, ename: str, ds, c: str, feats, res, save: str = '') -> dict:
    "The diagnostics row of one Multi-Sub result `res` (see the module doc); with `save`, its npz in that folder."
    import numpy as np, torch, torch.nn.functional as F
    from multiclust.proxy import image_embeddings, prompt_embeddings
    from multiclust.diagnostics import spread, effective_rank
    from multiclust.core import kmeans
    from multiclust.metrics import nmi
    true, k, s, quick = ds.label_ids(c), res.k, res.seed, bool(res.params.get('quick'))
    e, n_init = res.embeddings, res.params.get('n_init', 10)
    embs = {'trunk': F.normalize(feats.float(), dim=-1), 'image0': image_embeddings(enc, feats),
            'image': torch.as_tensor(e['image']), 'token': torch.as_tensor(e['proxy_token']),
            'prompt': torch.as_tensor(e['prompt_text'])}
    T = prompt_embeddings(enc, res.params['template'], res.words)
    zs = (embs['image0'] @ T.T).argmax(-1).numpy()
    row = dict(dataset=ds.name, concept=c, encoder=ename, method=res.params.get('registry'), seed=s, quick=quick, k=k,
               n_images=len(ds),
               nmi={n: round(float(nmi(true, kmeans(F.normalize(X, dim=-1), k, s, n_init))), 4) for n, X in embs.items()},
               spread={n: round(spread(X), 4) for n, X in embs.items()},
               erank={n: round(effective_rank(X), 2) for n, X in embs.items()})
    from multiclust.multisub import balanced_embedding                 # the final embedding before issue 26
    joint = kmeans(balanced_embedding(embs['token'], embs['image']), k, s, n_init)
    row['nmi'].update(final=round(float(res.metrics['nmi']), 4), zeroshot=round(float(nmi(true, zs)), 4),
                      balanced=round(float(nmi(true, joint)), 4))
    ep = [h for h in res.history if h.get('phase') in ('I', 'II') and 'image_spread' in h]
    if ep:
        row['image_spread_epochs'] = [round(ep[0]['image_spread'], 4), round(ep[-1]['image_spread'], 4),
                                      round(min(h['image_spread'] for h in ep), 4)]
        row['image_erank_epochs'] = [round(ep[0]['image_erank'], 2), round(ep[-1]['image_erank'], 2),
                                     round(min(h['image_erank'] for h in ep), 2)]
    row['phase1_epochs_per_round'] = [h['phase1_epochs_run'] for h in res.history if h.get('phase') == 'round']
    row['chosen'] = (res.params.get('selection') or {}).get('chosen')
    row.update(final_rule=res.params.get('final', 'balanced'), score=res.params.get('score'),
               text_trust=res.params.get('text_trust'))
    if save:
        os.makedirs(save, exist_ok=True)
        np.savez_compressed(os.path.join(save, f"{ds.name}_{c}_{ename}_{row['method']}_s{s}{'_quick' if quick else ''}.npz"),
                            true=true, final=res.labels, zs=zs, T=T.numpy(), words=np.array(res.words),
                            **{n: X.numpy() for n, X in embs.items()})
    return row

def rules(save: str, figure: str = '', powers=()) -> str:
    """Per saved full-mode fit: k-means NMI of the final embedding as `final='balanced'` and `final='trust'` make it
    (from the fit's own embeddings, rho = the relative loss of its image half and prompts, K-means seeded with the
    fit's seed, 10 restarts as in full mode), the k-means baseline and zero-shot; then the means over seeds.
    `zeroshot_k`: zero-shot kept to K clusters, each image's nearest prompt among the K words zero-shot uses most
    (label-free; plain zero-shot may use more than K words, which K-cluster NMI cannot match). `powers`: the trust
    share (1 - rho)**p instead of 1 - rho, per p (`trust_p<p>`): a sweep read against the labels, so a choice made
    from it is a labelled dev-set choice."""
    import glob, numpy as np, pandas as pd, torch
    from multiclust.multisub import balanced_embedding, trust_embedding, text_trust
    from multiclust.diagnostics import relative_alignment_loss
    from multiclust.core import kmeans
    from multiclust.metrics import nmi
    rows = []
    for f in sorted(glob.glob(os.path.join(save, '*.npz'))):
        name = os.path.basename(f)[:-4]
        if name.endswith('_quick'): continue
        d = np.load(f)
        ds, c, e = name.split('_')[:3]
        s, t = int(name.rsplit('_s', 1)[1]), d['true']
        k = len(np.unique(t))
        tok, img, img0 = (torch.as_tensor(d[n]) for n in ('token', 'image', 'image0'))
        rho = relative_alignment_loss(img, torch.as_tensor(d['prompt']))
        S = torch.nn.functional.normalize(img0, dim=-1) @ torch.as_tensor(d['T']).T        # the zero-shot scores
        top = np.argsort(-np.bincount(d['zs'], minlength=S.shape[1]), kind='stable')[:k]   # its K most used words
        sweep = {f'trust_p{p:g}': nmi(t, kmeans(trust_embedding([tok, img], img0, 1 - text_trust(rho) ** p), k, s, 10))
                 for p in powers}
        rows.append(dict(dataset=ds, concept=c, encoder=e, method='randwords' if 'randwords' in name else 'multisub',
                         seed=s, rho=rho, trust=text_trust(rho),
                         kmeans=nmi(t, kmeans(torch.nn.functional.normalize(img0, dim=-1), k, s, 10)),
                         zeroshot=nmi(t, d['zs']), zeroshot_k=nmi(t, top[S[:, top].argmax(-1).numpy()]),
                         zeroshot_words=int((np.bincount(d['zs']) > 0).sum()), balanced=nmi(t, kmeans(balanced_embedding(tok, img), k, s, 10)),
                         trust_rule=nmi(t, kmeans(trust_embedding([tok, img], img0, rho), k, s, 10)), **sweep))
    df = pd.DataFrame(rows)
    g = df.groupby(['dataset', 'concept', 'encoder', 'method'])
    out = g[['rho', 'kmeans', 'zeroshot', 'zeroshot_words', 'zeroshot_k', 'balanced', 'trust_rule',
             *[c for c in df.columns if c.startswith('trust_p')]]].mean().round(3)
    out['seeds'] = g.size()
    if figure: plot_rules(out, figure)
    return df.round(3).to_string() + '\n\nmeans over seeds:\n' + out.to_string()


def plot_rules(means, path: str):
    "Grouped bars: per (dataset, concept, encoder) of Multi-Sub, k-means, zero-shot and the two final embeddings."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt, numpy as np
    m = means.xs('multisub', level='method')
    cols = [('kmeans', 'k-means (pretrained image)'), ('zeroshot', 'zero-shot, same words'),
            ('balanced', "Multi-Sub, final='balanced' (before)"), ('trust_rule', "Multi-Sub, final='trust' (issue 26)")]
    encs = list(dict.fromkeys(m.index.get_level_values('encoder')))
    fig, axes = plt.subplots(1, len(encs), figsize=(5 + 1.3 * len(m), 3.8), squeeze=False,
                             gridspec_kw=dict(width_ratios=[(m.index.get_level_values('encoder') == e).sum() for e in encs]))
    for ax, e in zip(axes[0], encs):
        me = m.xs(e, level='encoder')
        x = np.arange(len(me))
        for i, (c, label) in enumerate(cols):
            ax.bar(x + (i - 1.5) * .2, me[c], .2, label=label, color=f'C{i}')
        ax.set_xticks(x, [f"{d}\n{c}\n({n} seed{'s' * (n > 1)})" for (d, c), n in zip(me.index, me['seeds'])], fontsize=8)
        ax.set_ylabel('NMI'); ax.set_ylim(0, 1.05)
        ax.set_title({'cnn': 'offline encoder (CNN trunk; not CLIP)', 'conse': 'offline encoder (ConSE trunk; not CLIP)',
                      'toyclip': 'toy CLIP, synthetic'}.get(e, e), fontsize=10)
    axes[0][0].legend(fontsize=7, loc='upper left')
    fig.suptitle("Multi-Sub's final embedding, full mode: k-means NMI against the labels (read only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    main()
