# DRAFT (not run, not tested): the 05_ablation notebook in percent format, written against
# multiclust.baselines.run_method before that API landed. Build with
#   python tools/drafts/nbbuild.py tools/drafts/05_ablation_draft.py nbs/05_ablation.ipynb
# then check it against run_method and test it. Issue 8 is open.
# %% [markdown]
# # Ablation: every method and ablation on one dataset
#
# > Run headless, one dataset per run: `papermill nbs/05_ablation.ipynb out/cmuface.ipynb -p dataset cmuface -p seeds 3`
#
# This notebook is a program. Its `parameters` cell (tagged for papermill) says which dataset, encoder,
# methods, seeds and budgets; the defaults are the **quick mode on the embedded synthetic set**, so the
# notebook runs top to bottom in a couple of minutes (that is what `multiclust demo` and the tests run).
# For every concept of the dataset it produces:
#
# 1. **the main table** (the paper's Tables 2–3): every method × concept, NMI and RI mean±std over seeds;
# 2. **the subspace ablation** (Table 5): the proxy's *token* embedding vs the proxy word's *text*
#    embedding vs the *prompt* embedding, each clustered alone and concatenated with the image embedding;
# 3. **the encoder ablation** (Table 4) over CLIP / ALIGN / BLIP / offline / toy CLIP, recording
#    `not available: <why>` where weights cannot be had, and **MMD** between the available encoders'
#    text spaces (Table 6);
# 4. **λ sensitivity** (Fig. 4), **t-SNE** of image vs Multi-Sub embeddings (Fig. 3), and a
#    **contingency heatmap** of predicted vs true clusters;
# 5. a **new concept** the labels do not name (Table 7's idea): clusters and a gallery of examples.
#
# Every row of `results/<dataset>.csv` names the encoder, its weights, and where the reference words
# came from. Finished rows are kept when a run is interrupted, and skipped when it is run again
# (`resume=True`).

# %% parameters
dataset = 'synthetic'      # registry name under the data root, or a folder with labels.csv
data_root = None           # default: $MULTICLUST_DATA
encoder = 'default'        # 'default' = toyclip on synthetic, auto elsewhere; or auto/openclip/offline/toyclip/align/blip
methods = 'all'            # 'all' or a comma list of multiclust.baselines.METHODS names
seeds = 1                  # seeds per method (mean±std over them)
quick = True               # small training budgets (tests, demo); False for the real runs
lambdas = [0.1, 0.3, 0.5, 0.7, 1.0]     # λ grid of eq. 8 (Fig. 4)
encoders_ablation = ['openclip', 'align', 'blip', 'offline', 'toyclip']
sections = 'main,subspace,encoder,lambda,figures,new_concept'
new_concept = 'default'    # a word the labels do not name ('default': the dataset's suggestion below; '' to skip)
new_concept_words = []     # its reference words ([] = from the LLM cache / suggestion)
max_images = 0             # 0 = all images; >0 = a seeded subset (quick experiments)
threads = 2                # torch threads: same seed + same threads = same numbers
results_dir = '../results'
figures_dir = '../figures'
resume = True

# %%
import os, time, warnings, logging
from pathlib import Path
import numpy as np, pandas as pd, torch
from IPython.display import display, Markdown
from multiclust.clip import load_encoder, WeightsUnavailable
from multiclust.data import load_dataset, extract_features
from multiclust.baselines import METHODS, run_method
from multiclust.multisub import MultiSub, kmeans
from multiclust.metrics import evaluate
from multiclust.report import (save_results, load_results, rows_frame, pivot_mean_std, bar_figure, contingency_figure,
                               tsne_figure, line_figure, gallery_figure, save_fig)
torch.set_num_threads(int(threads))
warnings.filterwarnings('ignore', category=FutureWarning)
in_test = os.environ.get('IN_TEST') == '1'
if in_test:   # nbdev_test executes this notebook: keep the repository's results/ and figures/ untouched
    import tempfile
    results_dir = figures_dir = tempfile.mkdtemp(prefix='multiclust-05-')
seeds_list = list(range(int(seeds)))
sections = [s.strip() for s in sections.split(',') if s.strip()] if isinstance(sections, str) else list(sections)

# %% [markdown]
# ## Data, encoder, features
#
# The encoder is chosen once and recorded in every row. On the synthetic set the default is the toy
# CLIP the project trains (`00a_toy_clip`): it is the one setting here where text–image alignment for
# colour and shape exists offline. Elsewhere the default is `auto`: CLIP when its weights are on the
# machine, else the offline pair — and the log and rows say which.

# %%
ds = load_dataset(dataset, root=data_root)
if max_images and len(ds) > max_images:
    ds = ds.subset(np.sort(np.random.default_rng(0).choice(len(ds), int(max_images), replace=False)))
enc_name = ('toyclip' if ds.name.startswith('synthetic') else 'auto') if encoder == 'default' else encoder
enc = load_encoder(enc_name)
feats = extract_features(enc, ds)
ds_name = ds.spec.name if ds.spec is not None else ds.name
concepts = ds.concepts
print(f"{ds_name}: {len(ds)} images, concepts {ds.counts()}; encoder {enc.name} ({enc.weights})" + (f" — {enc.note}" if enc.note else ''))
print(f"features {tuple(feats.shape)} from the cache; threads {torch.get_num_threads()}; quick={quick}; seeds={seeds_list}")

# %% [markdown]
# Rows already in `results/<dataset>.json` (same dataset, encoder fingerprint and mode) are kept and
# skipped — an interrupted run resumes where it stopped. Every finished row is saved at once.

# %%
def _key(r): return (r['section'], r['method'], str(r.get('variant') or ''), r['concept'], int(r['seed']))
old = load_results(ds_name, results_dir) if resume else []
rows = [r for r in old if r.get('fingerprint') == enc.fingerprint and bool(r.get('quick')) == bool(quick)]
done = {_key(r) for r in rows}
print(f"resuming with {len(rows)} finished rows" if rows else "no finished rows to resume from")

def record(res, section, variant='', **extra):
    "Append one ClusterResult (or a dict for unavailable runs) as a row and save the table atomically."
    base = res.row() if hasattr(res, 'row') else dict(res)
    base.update(dataset=ds_name, section=section, variant=variant, quick=bool(quick), **extra)
    base.setdefault('fingerprint', enc.fingerprint if section != 'encoder' else base.get('fingerprint'))
    base.setdefault('status', 'ok')
    rows.append(base); done.add(_key(base))
    save_results(rows, ds_name, results_dir)
    return base

# %% [markdown]
# ## 1. Main table: methods × concepts
#
# `kmeans` clusters the image embeddings and ignores the concept, so it can only be right for one
# concept at a time; `zeroshot-gpt` assigns each image to its nearest reference-word prompt;
# `zeroshot-label` does the same with the true class names (an **oracle**, it knows the answer's
# vocabulary); `multimap`, `text-anchored`, `multisub`, `multidproxy` are the learned/anchored methods;
# `multisub-randwords` is Multi-Sub with random dictionary nouns in place of the reference words — the
# control that shows what the words add.

# %%
method_names = list(METHODS) if methods == 'all' else [m.strip() for m in methods.split(',')]
unknown = [m for m in method_names if m not in METHODS]
if unknown: raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
results = {}          # (method, concept, seed) -> ClusterResult, for the figures below
if 'main' in sections:
    from tqdm.auto import tqdm
    jobs = [(c, m, s) for c in concepts for m in method_names for s in seeds_list]
    for c, m, s in tqdm(jobs, desc='main table'):
        if ('main', m, '', c, s) in done and m != 'multisub': continue
        try:
            res = run_method(m, enc, ds, c, seed=s, feats=feats, quick=quick)
        except Exception as e:           # one failing method must not lose the others; the row says why
            if ('main', m, '', c, s) not in done:
                record(dict(method=m, concept=c, seed=s, status=f'failed: {type(e).__name__}: {str(e)[:200]}', **enc.describe()), 'main')
            continue
        results[(m, c, s)] = res
        if ('main', m, '', c, s) not in done: record(res, 'main')
    main = rows_frame([r for r in rows if r['section'] == 'main' and r.get('status', 'ok') == 'ok'])
    display(Markdown(f"**NMI** (mean±std over {len(seeds_list)} seed(s)), encoder `{enc.name}`"))
    display(pivot_mean_std(main, 'method', 'concept', 'nmi'))
    display(Markdown("**RI**")); display(pivot_mean_std(main, 'method', 'concept', 'ri'))
    failed = [r for r in rows if r['section'] == 'main' and str(r.get('status', 'ok')) != 'ok']
    for r in failed: print(f"  {r['method']}/{r['concept']}: {r['status']}")
    save_fig(bar_figure(main, f"{ds_name}: NMI per concept and method (encoder: {enc.name})"),
             Path(figures_dir) / f'{ds_name}_main_nmi.png')

# %% [markdown]
# ## 2. Subspace ablation (Table 5)
#
# One Multi-Sub fit gives every embedding the table needs: the proxy **token** embedding $w_i$ (a convex
# mix of reference-word token embeddings), the **text** embedding of the proxy word alone (the text tower
# on `*` := $w_i$), and the **prompt** embedding (the tower on the whole template). Each is clustered by
# k-means alone and concatenated (after $\ell_2$ normalisation) with the learned image embedding.

# %%
SUBSPACES = {'token': 'proxy_token', 'text': 'proxy_text', 'prompt': 'prompt_text'}
if 'subspace' in sections:
    for c in concepts:
        truth = ds.label_ids(c)
        for s in seeds_list:
            res = results.get(('multisub', c, s)) or run_method('multisub', enc, ds, c, seed=s, feats=feats, quick=quick)
            img = res.embeddings['image']; img = img / np.linalg.norm(img, axis=1, keepdims=True)
            for sub, key in SUBSPACES.items():
                X = res.embeddings[key]; X = X / np.linalg.norm(X, axis=1, keepdims=True)
                for how, Z in (('text-only', X), ('text+image', np.concatenate([X, img], 1))):
                    if ('subspace', 'multisub', f'{sub}/{how}', c, s) in done: continue
                    t0 = time.time(); lab = kmeans(Z, ds.n_clusters(c), s)
                    record(dict(method='multisub', concept=c, seed=s, k=ds.n_clusters(c), **evaluate(truth, lab),
                                runtime_s=round(time.time() - t0, 3), **enc.describe(), word_source=res.word_source),
                           'subspace', f'{sub}/{how}')
    sub = rows_frame([r for r in rows if r['section'] == 'subspace'])
    display(Markdown(f"**Subspace ablation, NMI** (encoder `{enc.name}`)"))
    display(pivot_mean_std(sub, 'variant', 'concept', 'nmi'))

# %% [markdown]
# ## 3. Encoder ablation (Table 4) and MMD between encoder spaces (Table 6)
#
# Multi-Sub with each text/image backbone behind the same seam. An encoder whose weights cannot be
# had on this machine gets a row `not available: <why>` — never a random model passed off as a result.
# MMD compares the encoders' text spaces on the same prompts (each space represented by its
# same-text similarity profiles, so different widths are comparable; see `00c_mmd`).

# %%
available = {enc.name: enc}
if 'encoder' in sections:
    for name in encoders_ablation:
        if name in available: e2 = available[name]
        else:
            try: e2 = available[name] = load_encoder(name) if name != 'openclip' else load_encoder(name, download=False)
            except (WeightsUnavailable, Exception) as err:
                why = str(err).split('. ')[0][:240]
                for c in concepts:
                    if ('encoder', 'multisub', name, c, 0) not in done:
                        record(dict(method='multisub', concept=c, seed=0, encoder=name, weights='', status=f'not available: {why}'),
                               'encoder', name, fingerprint='')
                print(f"{name}: not available: {why}")
                continue
        f2 = feats if e2 is enc else extract_features(e2, ds)
        for c in concepts:
            if ('encoder', 'multisub', name, c, 0) in done: continue
            res = run_method('multisub', e2, ds, c, seed=0, feats=f2, quick=quick)
            record(res, 'encoder', name, fingerprint=e2.fingerprint)
    encs = rows_frame([r for r in rows if r['section'] == 'encoder'])
    display(Markdown("**Encoder ablation, Multi-Sub NMI (seed 0)**"))
    display(encs.pivot_table(index='variant', columns='concept', values='nmi', aggfunc='first', sort=False)
            .join(encs.groupby('variant', sort=False)['status'].first()))
    if len(available) > 1:
        from multiclust.mmd import encoder_mmd
        from multiclust.refwords import reference_words
        texts = sorted({ds.concept_spec(c).prompt(w) for c in concepts if ds.concept_spec(c)
                        for w in reference_words(ds_name, c).words})
        names = list(available); mm = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                r = encoder_mmd(available[a], available[b], texts, n_perm=50 if quick else 200)
                mm.append(dict(encoder_a=a, encoder_b=b, mmd2=r['mmd2'], p_value=r['p_value'], n_texts=r['n_texts']))
        mmd_df = pd.DataFrame(mm); display(Markdown(f"**MMD² between text spaces** ({len(texts)} prompts)")); display(mmd_df)
        mmd_df.to_csv(Path(results_dir) / f'{ds_name}_mmd.csv', index=False)

# %% [markdown]
# ## 4. λ sensitivity (Fig. 4)
#
# λ weighs the inter-cluster margin term against the intra-cluster term in Phase II (eq. 8).

# %%
if 'lambda' in sections:
    for c in concepts:
        for lam in lambdas:
            if ('lambda', 'multisub', f'lambda={lam}', c, 0) in done: continue
            res = run_method('multisub', enc, ds, c, seed=0, feats=feats, quick=quick, lam=float(lam))
            record(res, 'lambda', f'lambda={lam}', lam=float(lam))
    lam_df = rows_frame([r for r in rows if r['section'] == 'lambda'])
    lam_df['lambda'] = lam_df['variant'].str.replace('lambda=', '').astype(float)
    save_fig(line_figure(lam_df, 'lambda', f"{ds_name}: Multi-Sub NMI vs λ (encoder: {enc.name})"),
             Path(figures_dir) / f'{ds_name}_lambda.png')
    display(lam_df.pivot_table(index='lambda', columns='concept', values='nmi', aggfunc='first'))

# %% [markdown]
# ## 5. Pictures: t-SNE (Fig. 3) and contingency
#
# Left, the image embeddings (one space for every concept); right, Multi-Sub's learned embedding for
# the concept asked. Colours are the true labels of that concept: a good concept-specific embedding
# separates the colours of its own concept.

# %%
if 'figures' in sections:
    for c in concepts:
        res = results.get(('multisub', c, 0)) or run_method('multisub', enc, ds, c, seed=0, feats=feats, quick=quick)
        lab = ds.labels(c)
        save_fig(tsne_figure({'image embedding': res.embeddings['image'], f'Multi-Sub ({c})': res.embeddings['token+image']},
                             lab, f"{ds_name} / {c}: t-SNE coloured by true {c} (encoder: {enc.name})"),
                 Path(figures_dir) / f'{ds_name}_tsne_{c}.png')
        save_fig(contingency_figure(lab, res.labels, f"{ds_name} / {c}: Multi-Sub clusters vs truth (encoder: {enc.name})"),
                 Path(figures_dir) / f'{ds_name}_contingency_{c}.png')
    print('figures in', Path(figures_dir).resolve())

# %% [markdown]
# ## 6. A new concept (Table 7's idea)
#
# The user types a concept the labels do not name; Multi-Sub clusters by it with reference words for
# it, and a gallery shows what came out. Where a ground truth can be derived from existing labels (a
# card's *colour* is red for hearts and diamonds, black for clubs and spades; a synthetic shape's colour
# *temperature* is warm for red/orange/yellow) it is scored too.

# %%
SUGGESTED = {  # dataset -> (concept word, reference words, template, derived truth from an existing concept or None)
    'cards': ('color', ['red', 'black'], 'a card with the color of *',
              ('suits', {'hearts': 'red', 'diamonds': 'red', 'clubs': 'black', 'spades': 'black'})),
    'synthetic': ('temperature', ['warm', 'cool'], 'a shape with a * color',
                  ('color', {'red': 'warm', 'orange': 'warm', 'yellow': 'warm', 'green': 'cool', 'blue': 'cool', 'purple': 'cool'})),
    'cmuface': ('lighting', ['bright', 'dark', 'shadowed', 'evenly lit'], 'a face photographed in * light', None),
    'cars': ('viewpoint', ['front', 'side', 'rear', 'three-quarter'], 'a car seen from the * view', None),
}
if 'new_concept' in sections and new_concept:
    sug = SUGGESTED.get(ds_name)
    if new_concept == 'default' and sug is None: print(f'no suggested new concept for {ds_name}; pass new_concept=...')
    else:
        word, words, template, derived = sug if new_concept == 'default' else (new_concept, list(new_concept_words), None, None)
        if new_concept != 'default':
            obj = ds.spec.object_word if ds.spec else 'image'
            template = f'a {obj} with the {word} of *'
            if not words:
                from multiclust.refwords import query_llm, make_client
                words = query_llm(obj, word, n=12, client=make_client())   # needs OPENAI_API_KEY; else pass new_concept_words
        k = len(words) if derived is None else len(set(derived[1].values()))
        truth = None if derived is None else [derived[1].get(v, v) for v in ds.labels(derived[0])]
        res = MultiSub(enc, **METHODS['multisub'].budgets(quick), seed=0).fit_features(feats, template, words, k, truth, ds_name, word)
        res.word_source = 'user (new concept)'
        if ('new_concept', 'multisub', word, word, 0) not in done: record(res, 'new_concept', word)
        print(f"new concept {word!r}: {k} clusters with words {words}" + (f"; scored against derived truth: NMI {res.metrics['nmi']:.3f}" if truth else ''))
        rng = np.random.default_rng(0)
        gal = {f'cluster {j} (n={int((res.labels == j).sum())})': [ds.load_image(i) for i in rng.permutation(np.flatnonzero(res.labels == j))[:6]]
               for j in range(k)}
        save_fig(gallery_figure(gal, f"{ds_name}: clusters for the new concept '{word}' (encoder: {enc.name})"),
                 Path(figures_dir) / f'{ds_name}_new_{word}.png')

# %% [markdown]
# ## Where the numbers are

# %%
out = save_results(rows, ds_name, results_dir)
print(f"{len(rows)} rows -> {Path(out).resolve()} (+ .json); encoder {enc.name} ({enc.weights})")
