"""Benchmark: Multi-Sub's full mode with the cheaper selection (`select='halving'`, the default since issue 23)
against the exhaustive selection (`select='exhaustive'`, the full mode before it), on the same data in one run.

Per (concept, seed): the two full-mode fits one after the other (the order alternates from pair to pair, so a
drift in the machine's load does not favour one), each through `run_method('multisub', ...)` on features
extracted before any timing. Printed per pair: the wall time of each and their ratio, the (lr, weight decay)
each chose, NMI of each (read only, never used to choose), and whether the new choice counts as the same: the
same (lr, wd), or a final NMI within .01 of the exhaustive one. Also, from the exhaustive run's recorded score
trajectories, what other rung schedules would have chosen (`--simulate`), and their share of its candidate epochs.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MULTICLUST_CACHE=... python tests/benchmarks/bench_select_cost.py \
        [--dataset synthetic] [--n 1000] [--encoder toyclip] [--seeds 0,1,2] [--concepts color,shape,size,background]
        [--threads 1] [--out rows.jsonl]

`--out` appends each finished pair as one JSON line and skips pairs already there (an interrupted run resumes).
Not collected by pytest (file name). The last line is one JSON object (the summary).
"""
import argparse, json, math, os, subprocess, time

SCHEDULES = {                       # rung schedules the exhaustive trajectories are replayed with
    'round1-keep3': ({'after_rounds': 1, 'keep': 3},),
    'ep3-keep6,round1-keep2': ({'after_epochs': 3, 'keep': 6}, {'after_rounds': 1, 'keep': 2}),
    'ep3-keep8,round1-keep3': ({'after_epochs': 3, 'keep': 8}, {'after_rounds': 1, 'keep': 3}),
    'ep2-lrs2,ep6-keep6,round1-perlr1': ({'after_epochs': 2, 'keep_lrs': 2}, {'after_epochs': 6, 'keep': 6},
                                         {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep3-lrs2,round1-perlr1': ({'after_epochs': 3, 'keep_lrs': 2}, {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep3-lrs3,ep6-keep6,round1-perlr1': ({'after_epochs': 3, 'keep_lrs': 3}, {'after_epochs': 6, 'keep': 6},
                                         {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep1-lrs2,ep5-keep6,round1-perlr1': ({'after_epochs': 1, 'keep_lrs': 2}, {'after_epochs': 5, 'keep': 6},
                                         {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep2-lrs2,ep6-perlr2,round1-perlr1': ({'after_epochs': 2, 'keep_lrs': 2}, {'after_epochs': 6, 'keep_per_lr': 2},
                                          {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep2-lrs2,ep10-perlr2,round1-perlr1': ({'after_epochs': 2, 'keep_lrs': 2}, {'after_epochs': 10, 'keep_per_lr': 2},
                                           {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep2-lrs3,ep6-perlr2,round1-perlr1': ({'after_epochs': 2, 'keep_lrs': 3}, {'after_epochs': 6, 'keep_per_lr': 2},
                                          {'after_rounds': 1, 'keep_per_lr': 1}),
    'ep2-lrs2,ep6-keep6,round1-keep2': ({'after_epochs': 2, 'keep_lrs': 2}, {'after_epochs': 6, 'keep': 6},
                                        {'after_rounds': 1, 'keep': 2}),
}


def simulate(cands, rungs):
    """Replay `rungs` on the exhaustive candidates' score trajectories with the library's `rung_survivors`: (chosen
    (lr, wd), share of the exhaustive candidates' Phase I epochs that the halving would run). Collapse at a rung
    is not replayed (the final collapse flag still excludes a candidate from the choice)."""
    from multiclust.multisub import rung_survivors
    def at(c, rung):                  # the score the candidate had at the rung's pause (its final score if it ended first)
        for ep, ev, rnd, s in c['trajectory']:
            if ('after_rounds' in rung and ev == 'round' and rnd + 1 >= rung['after_rounds']) or \
               ('after_epochs' in rung and ev == 'epoch' and ep >= rung['after_epochs']):
                return s, ep
        return c['score'], c['phase1_epochs_run']
    alive, spent = list(range(len(cands))), [0] * len(cands)
    for rung in rungs:
        got = [at(cands[i], rung) for i in alive]
        for i, g in zip(alive, got): spent[i] = g[1]
        sc = [g[0] if cands[i]['status'] == 'ok' else math.inf for i, g in zip(alive, got)]
        alive = [alive[j] for j in rung_survivors(rung, [cands[i]['lr'] for i in alive], sc)]
    for i in alive: spent[i] = cands[i]['phase1_epochs_run']
    ok = [i for i in alive if cands[i]['status'] == 'ok' and not cands[i]['collapsed']]
    win = min(ok, key=lambda i: cands[i]['score']) if ok else None
    share = sum(spent) / sum(c['phase1_epochs_run'] for c in cands)
    return (None if win is None else (cands[win]['lr'], cands[win]['weight_decay'])), round(share, 3)


def replay(path):
    "Print, per schedule, how often it chooses what the exhaustive selection chose, and its share of the epochs."
    rows = [json.loads(l) for l in open(path) if l.strip()]
    for name, rungs in SCHEDULES.items():
        res = [simulate(r['candidates'], rungs) for r in rows]
        same = sum(w == (r['chosen_exhaustive']['lr'], r['chosen_exhaustive']['weight_decay']) for (w, _), r in zip(res, rows))
        print(json.dumps(dict(schedule=name, same=f"{same}/{len(rows)}", mean_epoch_share=round(sum(s for _, s in res) / len(res), 3),
                              max_epoch_share=max(s for _, s in res))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dataset', default='synthetic')
    ap.add_argument('--n', type=int, default=1000, help='images of the synthetic set')
    ap.add_argument('--encoder', default='toyclip')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--concepts', default=None, help='default: every concept of the dataset')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    ap.add_argument('--out', default=None)
    ap.add_argument('--replay', default=None, help='only replay the rung schedules on the trajectories of this --traj file')
    ap.add_argument('--traj', default=None, help="append each pair's exhaustive candidates (with their score trajectories) here")
    a = ap.parse_args()
    if a.replay: return replay(a.replay)
    import torch
    torch.set_num_threads(a.threads)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    from multiclust.methods import run_method
    from multiclust.multisub import MultiSub
    enc = load_encoder(a.encoder)
    ds = load_dataset('synthetic', n=a.n) if a.dataset == 'synthetic' else load_dataset(a.dataset)
    feats = extract_features(enc, ds, progress=False)
    concepts = a.concepts.split(',') if a.concepts else list(ds.concepts)
    done = []
    if a.out and os.path.exists(a.out):
        done = [json.loads(l) for l in open(a.out) if l.strip()]
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    trunk = getattr(enc, 'trunk', None)                    # the offline encoder's trunk (its default changed in issue 23)
    key = lambda c, s: (a.dataset, len(ds), a.encoder, trunk, c, s)
    have = {(r['dataset'], r['n'], r['encoder'], r.get('trunk'), r['concept'], r['seed']) for r in done}
    print(f"{a.encoder}{f' ({trunk} trunk)' if trunk else ''} on {a.dataset} n={len(ds)}, threads={a.threads}, cpus={os.cpu_count()}, "
          f"load(1 min) {os.getloadavg()[0]:.2f}, halving rungs {MultiSub(enc, **MultiSub.FULL).halving}", flush=True)
    rows = [r for r in done if (r['dataset'], r['n'], r['encoder'], r.get('trunk')) == key('', 0)[:4]]
    for p, seed in enumerate([int(s) for s in a.seeds.split(',')]):
        for q, c in enumerate(concepts):
            if key(c, seed) in have: continue
            out, load = {}, os.getloadavg()[0]
            order = ('exhaustive', 'halving') if (p + q) % 2 == 0 else ('halving', 'exhaustive')
            for sel in order:
                t = time.perf_counter()
                r = run_method('multisub', enc, ds, c, seed, feats=feats, select=sel, threads=a.threads)
                out[sel] = (time.perf_counter() - t, r)
            (wo, ro), (wn, rn) = out['exhaustive'], out['halving']
            so, sn = ro.params['selection'], rn.params['selection']
            same = so['chosen'] == sn['chosen']
            row = dict(dataset=a.dataset, n=len(ds), encoder=a.encoder, trunk=trunk, concept=c, seed=seed, threads=a.threads,
                       load_1min=round(load, 2), order=order[0] + ' first', commit=commit,
                       exhaustive_s=round(wo, 1), halving_s=round(wn, 1), speedup=round(wo / wn, 2),
                       chosen_exhaustive=so['chosen'], chosen_halving=sn['chosen'],
                       nmi_exhaustive=round(ro.metrics['nmi'], 4), nmi_halving=round(rn.metrics['nmi'], 4),
                       same_choice=same, counts_as_same=same or abs(ro.metrics['nmi'] - rn.metrics['nmi']) <= .01,
                       refit=sn['refit'], halving_epochs=sum(x['phase1_epochs_run'] for x in sn['candidates']),
                       exhaustive_epochs=sum(x['phase1_epochs_run'] for x in so['candidates']),
                       simulated={name: simulate(so['candidates'], rungs) for name, rungs in SCHEDULES.items()})
            row['simulated'] = {k: dict(chosen=v[0], same=v[0] == (so['chosen']['lr'], so['chosen']['weight_decay'])
                                        if so['chosen'] else v[0] is None, epoch_share=v[1]) for k, v in row['simulated'].items()}
            rows.append(row); print(json.dumps(row), flush=True)
            if a.traj:
                with open(a.traj, 'a') as f:
                    f.write(json.dumps(dict(row, candidates=so['candidates'])) + '\n'); f.flush()
            if a.out:
                with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n'); f.flush()
    if not rows: return
    tot_o, tot_n = sum(r['exhaustive_s'] for r in rows), sum(r['halving_s'] for r in rows)
    sims = {k: f"{sum(r['simulated'][k]['same'] for r in rows)}/{len(rows)} same, epoch share "
               f"{sum(r['simulated'][k]['epoch_share'] for r in rows) / len(rows):.3f}" for k in SCHEDULES}
    print(json.dumps(dict(bench='select_cost', dataset=a.dataset, n=len(ds), encoder=a.encoder, threads=a.threads,
                          pairs=len(rows), same_choice=f"{sum(r['same_choice'] for r in rows)}/{len(rows)}",
                          counts_as_same=f"{sum(r['counts_as_same'] for r in rows)}/{len(rows)}",
                          exhaustive_s=round(tot_o, 1), halving_s=round(tot_n, 1), speedup_total=round(tot_o / tot_n, 2),
                          speedup_min=min(r['speedup'] for r in rows), load_end=round(os.getloadavg()[0], 2),
                          simulated=sims)))


if __name__ == '__main__':
    main()
