"""Benchmark: Multi-MaP on the synthetic set with the toy CLIP, NMI per concept, with k-means and zero-shot beside it.

Runs the registry's full budgets (`run_method(..., quick=False)`) for `kmeans`, `zeroshot-gpt` and `multimap` on
every concept of `synthetic`, seeds 0..S-1, and prints one line per method x concept with the mean and std of NMI,
plus Multi-MaP's contrastive concepts as recorded in its result's params.

    OMP_NUM_THREADS=1 MULTICLUST_CACHE=/tmp/x .venv/bin/python tests/benchmarks/bench_multimap.py [--seeds 3] [--set k=v ...]

`--set` passes Multi-MaP overrides (numbers parsed as JSON: `--set lr=1.0 --set batch_size=256`).
"""
import argparse, json, time


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--set', action='append', default=[], help='Multi-MaP override k=v')
    a = ap.parse_args(argv)
    import numpy as np, torch
    torch.set_num_threads(1)
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.methods import run_method
    over = {}
    for s in a.set:
        k, v = s.split('=', 1)
        try: over[k] = json.loads(v)
        except json.JSONDecodeError: over[k] = v
    enc, ds = load_encoder('toyclip'), load_dataset('synthetic')
    for c in ds.concepts:
        for m in ('kmeans', 'zeroshot-gpt', 'multimap'):
            t0, nmis, extra = time.perf_counter(), [], ''
            for seed in range(a.seeds):
                r = run_method(m, enc, ds, c, seed, **(over if m == 'multimap' else {}))
                nmis.append(r.metrics['nmi'])
                if m == 'multimap': extra = f" contrast={r.params.get('contrast')} gamma={r.params.get('gamma')}"
            print(f"{c:10s} {m:13s} nmi={np.mean(nmis):.4f}±{np.std(nmis):.4f} seeds={a.seeds} "
                  f"s={time.perf_counter() - t0:.1f}{extra}", flush=True)


if __name__ == '__main__':
    main()
