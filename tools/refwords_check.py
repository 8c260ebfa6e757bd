"""Reference words the images choose (chapter 02b, `image_chosen_words`) against WordNet's hyponyms, per concept:
one `Clusterer` fit each, the true K given, seed 0, no words passed (the images choose) vs the WordNet list passed
as words; NMI against the hidden labels. Usage:
  MULTICLUST_DATA=../shared/data OMP_NUM_THREADS=1 python tools/refwords_check.py [--sets synthetic:toyclip,cars:offline,cmuface:offline] [--budgets quick|full]"""
import argparse, os, time
import pandas as pd, torch

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--sets', default='synthetic:toyclip,cars:offline,cmuface:offline')
    ap.add_argument('--budgets', choices=['quick', 'full'], default='quick'); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='results/refwords_check.csv'); ap.add_argument('--concepts', default='')
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    os.environ.pop('OPENAI_API_KEY', None); os.environ.pop('OPENAI_BASE_URL', None)      # no key: the images choose
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.refwords import wordnet_hyponyms, LLMError
    from multiclust.cluster import Clusterer
    from multiclust.metrics import nmi
    rows = []
    for item in a.sets.split(','):
        name, encname = item.split(':')
        try: ds = load_dataset(name)
        except Exception as e: print('skip', name, e); continue
        enc = load_encoder(encname)
        for c in ds.concepts:
            if a.concepts and c not in a.concepts.split(','): continue
            cs = ds.concept_spec(c); K, true = ds.n_clusters(c), ds.label_ids(c)
            try: wn = wordnet_hyponyms(c).words
            except LLMError as e: wn = None
            for src, words in (('image-chosen', None), ('wordnet-hyponyms', wn)):
                if src == 'wordnet-hyponyms' and words is None:
                    rows.append(dict(dataset=name, encoder=enc.name, concept=c, k=K, words_from=src, nmi=None, words='(none: not a WordNet noun with hyponyms)')); continue
                t0 = time.time()
                try:
                    r = Clusterer(c, K, words=words, template=cs.template, encoder=enc, seed=a.seed, quick=a.budgets == 'quick').fit(ds)
                    row = dict(nmi=round(nmi(true, r.labels_), 4), words=' '.join(r.words_),
                               scores=' '.join(f"{v:.3f}" for v in r.word_scores_.values()))
                except Exception as e: row = dict(nmi=None, words=f"error: {str(e)[:150]}")
                rows.append(dict(dataset=name, encoder=enc.name, concept=c, k=K, words_from=src, budgets=a.budgets,
                                 seed=a.seed, seconds=round(time.time() - t0, 1), **row))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows); os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True); df.to_csv(a.out, index=False)
    print(df.drop(columns=['words', 'scores'], errors='ignore').to_string(index=False))

if __name__ == '__main__': main()
