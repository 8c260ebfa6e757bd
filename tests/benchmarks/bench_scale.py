"""Benchmark: the whole Multi-Sub fit on N cached features, wall time and peak memory per N, and the slope in N.

Encoder: open_clip's `ViT-B-32` architecture with random weights (`open_clip.create_model('ViT-B-32',
pretrained=None)`, no download): the real text tower (width 512, 12 layers, 8 heads, context 77) and the
real image projection (768 -> 512). Images are stood in for by cached random features (N x 768 float32,
seeded), written to a safetensors cache file and loaded back the way `extract_features` returns them, so
the fit is what is timed. Labels are random (3 classes): the metrics mean nothing here, only the costs do.
The fit is `MultiSub.fit_features` with the prefix-cached text path; every N runs in a fresh subprocess so
that peak RSS (`ru_maxrss`) belongs to that N alone.

    OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/bench_scale.py [--ns 2000,10000,60000] [--threads 2]
        [--rounds 1 --phase1-epochs 1 --phase2-epochs 3 --batch-size 256 --n-init 10] [--sparse-proxies auto|true|false]
        [--protocol] [--device cuda]

`--device` runs the fit where the encoder is put (`auto`, `cpu`, `cuda`, `cuda:<i>`): the features are loaded from
the cache on the CPU and moved by the fit itself, as in the library; on a GPU the peak GPU memory is printed too.

`--protocol` fits with the paper's protocol as the library's full mode runs its chosen configuration
(`MultiSub.PROTOCOL`: Adam with weight decay, the projection anchored to its pretrained value, the relative loss
after every Phase I epoch for `patience`/`keep_best`, per-epoch diagnostics) instead of the class defaults, and
times Adam's steps apart: the Phase I step updates all N latent rows (dense), and its share of Phase I is printed.

The default budget (1 round: 1 Phase I epoch, 3 Phase II epochs, k-means with 10 restarts; no per-round
evaluation, no extra prompt/proxy text embeddings) is smaller than the library's default (3 rounds of 3 + 3
epochs): a Phase I epoch runs the 12-layer text tower forward and backward once per image, and that is
the whole cost. Each child also times its Phase I and Phase II epochs, and the summary extrapolates the
library-default budget from them. Not collected by pytest (file name). The last line is
`n=<largest N> wall_s=<t> peak_rss_mb=<m>`.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

WORDS = ['red', 'yellow', 'green', 'orange', 'purple', 'blue', 'brown', 'black']
TEMPLATE = 'a fruit with the color of *'
DEFAULT_BUDGET = dict(rounds=3, phase1_epochs=3, phase2_epochs=3)      # MultiSub's defaults


def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def vit_b32_random(seed=0):
    "open_clip ViT-B-32, random init, behind the encoder seam."
    import torch, open_clip, logging
    from multiclust.clip import OpenCLIPEncoder
    logging.getLogger().setLevel(logging.ERROR)             # open_clip warns that no weights were loaded: intended
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model('ViT-B-32', pretrained=None)
    enc = OpenCLIPEncoder(model, open_clip.image_transform(224, is_train=False), open_clip.get_tokenizer('ViT-B-32'),
                          f'random-init (ViT-B-32 architecture, seed {seed})', 'ViT-B-32')
    return enc


def child(a):
    import torch
    torch.set_num_threads(a.threads)
    from safetensors.torch import save_file, load_file
    import multiclust.multisub as msm
    rss_import = rss_mb()
    from multiclust.clip import resolve_device
    dev = resolve_device(a.device)
    enc = vit_b32_random().to(dev)
    n, dim = a.child, enc.feature_dim
    with tempfile.TemporaryDirectory() as tmp:              # the "feature cache": written once, loaded back
        path = os.path.join(tmp, 'features.safetensors')
        g = torch.Generator().manual_seed(0)
        save_file({'features': torch.randn(n, dim, generator=g)}, path)
        labels = torch.randint(0, 3, (n,), generator=g).numpy()
        rss_setup = rss_mb()
        timers = {'phase1_epoch': [], 'phase2_epoch': [], 'kmeans': []}
        def timed(name, fn):
            def w(*args, **kw):
                t = time.perf_counter(); out = fn(*args, **kw); timers[name].append(time.perf_counter() - t); return out
            return w
        msm.phase1_epoch = timed('phase1_epoch', msm.phase1_epoch)   # the module-level names fit_features calls
        msm.phase2_epoch = timed('phase2_epoch', msm.phase2_epoch)
        msm.kmeans = timed('kmeans', msm.kmeans)
        timers.update(adam_step_phase1=[], adam_step_phase2=[])
        adam_step = torch.optim.Adam.step
        def step(opt, *args, **kw):                    # Adam's own work: Phase I's includes the (N, d) latent factors
            t = time.perf_counter(); out = adam_step(opt, *args, **kw)
            dense = any(p.shape[0] == n for g in opt.param_groups for p in g['params'] if p.ndim == 2)
            timers['adam_step_phase1' if dense else 'adam_step_phase2'].append(time.perf_counter() - t); return out
        torch.optim.Adam.step = step
        proto = dict(msm.PROTOCOL, diagnostics=True) if a.protocol else {}
        t0 = time.perf_counter()
        feats = load_file(path)['features']
        ms = msm.MultiSub(enc, rounds=a.rounds, phase1_epochs=a.phase1_epochs, phase2_epochs=a.phase2_epochs,
                          batch_size=a.batch_size, n_init=a.n_init, text_embeddings=a.text_embeddings,
                          eval_rounds=a.eval_rounds, threads=a.threads, seed=0,
                          sparse_proxies={'auto': 'auto', 'true': True, 'false': False}[a.sparse_proxies], **proto)
        res = ms.fit_features(feats, TEMPLATE, WORDS, 3, labels, 'random', 'color')
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        wall = time.perf_counter() - t0
        gpu_mb = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == 'cuda' else None
    print(json.dumps(dict(n=n, wall_s=wall, peak_rss_mb=rss_mb(), device=str(dev), peak_gpu_mb=gpu_mb, rss_after_import_mb=rss_import,
                          rss_after_setup_mb=rss_setup, status=res.status, text_path=res.params['text_path_kind'],
                          threads=res.params['threads_used'], proxy_update=res.params.get('proxy_update', 'dense'),
                          optimizer=res.params['optimizer'], history=[h for h in res.history if h.get('phase') == 'round'],
                          timers=timers)), flush=True)


def lsq(xs, ys):
    "Least-squares line y = a + b x."
    n = len(xs); mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ns', default='2000,10000,60000', help='comma-separated N (the last line reports the largest)')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--phase1-epochs', type=int, default=1)
    ap.add_argument('--phase2-epochs', type=int, default=3)
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--n-init', type=int, default=10, help='k-means restarts for the final clustering')
    ap.add_argument('--text-embeddings', action='store_true', help='also embed prompt and proxy texts (2 more text-tower passes)')
    ap.add_argument('--eval-rounds', action='store_true', help='k-means + metrics after every round')
    ap.add_argument('--sparse-proxies', default='auto', choices=['auto', 'true', 'false'],
                    help="Phase I latent-factor update: 'auto' (row-wise where exact), 'true' (row-wise), 'false' (dense)")
    ap.add_argument('--filehash', type=int, default=60000, help='also time the content-hashed cache key over N files (0: skip)')
    ap.add_argument('--protocol', action='store_true', help="the paper's protocol (MultiSub.PROTOCOL: Adam, anchor, "
                    "patience, keep_best) instead of the class defaults; Adam's steps timed apart")
    ap.add_argument('--device', default='cpu', help="where the fit runs: auto | cpu | cuda | cuda:<i> (default: cpu)")
    ap.add_argument('--child', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child: return child(a)

    import torch, platform
    ns = sorted(int(x) for x in a.ns.split(','))
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, python {platform.python_version()}, threads={a.threads}, cpus={os.cpu_count()}, "
          f"load(1/5/15 min)={load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}", flush=True)
    print(f"encoder: open_clip ViT-B-32 architecture, random init (text tower 12x512, projection 768->512); "
          f"features: cached random N x 768 float32", flush=True)
    print(f"budget: rounds={a.rounds} phase1_epochs={a.phase1_epochs} phase2_epochs={a.phase2_epochs} "
          f"batch_size={a.batch_size} n_init={a.n_init} text_embeddings={a.text_embeddings} eval_rounds={a.eval_rounds} "
          f"sparse_proxies={a.sparse_proxies} protocol={a.protocol}",
          flush=True)
    fwd = [f'--{k}={v}' for k, v in (('threads', a.threads), ('rounds', a.rounds), ('phase1-epochs', a.phase1_epochs),
                                      ('phase2-epochs', a.phase2_epochs), ('batch-size', a.batch_size), ('n-init', a.n_init),
                                      ('sparse-proxies', a.sparse_proxies), ('device', a.device))]
    fwd += ['--text-embeddings'] * a.text_embeddings + ['--eval-rounds'] * a.eval_rounds + ['--protocol'] * a.protocol
    env = {**os.environ, 'OMP_NUM_THREADS': str(a.threads), 'MKL_NUM_THREADS': str(a.threads)}
    out = []
    for n in ns:
        p = subprocess.run([sys.executable, __file__, f'--child={n}', *fwd], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            print(p.stdout[-2000:], p.stderr[-4000:], file=sys.stderr); raise SystemExit(f"child n={n} failed")
        r = json.loads(p.stdout.strip().splitlines()[-1]); out.append(r)
        t = r['timers']; p1, p2, km = (sum(t[k]) for k in ('phase1_epoch', 'phase2_epoch', 'kmeans'))
        print(f"  n={n}: fit {r['wall_s']:.1f} s = Phase I {p1:.1f} s ({len(t['phase1_epoch'])} epochs) + Phase II {p2:.1f} s "
              f"({len(t['phase2_epoch'])} epochs) + k-means {km:.1f} s + rest {r['wall_s'] - p1 - p2 - km:.1f} s; "
              f"RSS after imports {r['rss_after_import_mb']:.0f} MB, with model+features {r['rss_after_setup_mb']:.0f} MB, "
              f"peak {r['peak_rss_mb']:.0f} MB; status={r['status']}, text path={r['text_path']}; device {r['device']}"
              + (f", peak GPU memory {r['peak_gpu_mb']:.0f} MB" if r['peak_gpu_mb'] is not None else ''), flush=True)
        steps = len(t['phase1_epoch']) * -(-n // a.batch_size)                 # Phase I optimiser steps
        print(f"    Phase I step: {1000 * p1 / max(1, steps):.1f} ms ({steps} steps of batch {a.batch_size}, "
              f"proxy update={r['proxy_update']}, optimizer={r['optimizer']})", flush=True)
        if t['adam_step_phase1']:
            s1 = sum(t['adam_step_phase1'])
            print(f"    Adam's dense Phase I steps: {s1:.1f} s = {100 * s1 / max(p1, 1e-9):.1f} % of Phase I, "
                  f"{100 * s1 / r['wall_s']:.1f} % of the fit ({1000 * s1 / len(t['adam_step_phase1']):.1f} ms per step); "
                  f"rounds: {[(h['round'], h.get('phase1_epochs_run'), h.get('changed')) for h in r['history']]}", flush=True)
    xs, ys = [r['n'] for r in out], [r['wall_s'] for r in out]
    if len(out) >= 2:
        a0, b = lsq(xs, ys)
        print(f"linear fit wall_s = {a0:.2f} + {1000 * b:.3f} ms * N  (least squares over N={xs})")
        for r in out: print(f"  n={r['n']}: measured {r['wall_s']:.1f} s, line {a0 + b * r['n']:.1f} s, "
                            f"{1000 * r['wall_s'] / r['n']:.3f} ms/image")
        pe = [(r['n'], sum(r['timers']['phase1_epoch']) / max(1, len(r['timers']['phase1_epoch']))) for r in out]
        _, b1 = lsq([x for x, _ in pe], [y for _, y in pe])
        print(f"Phase I epoch slope: {1000 * b1:.3f} ms/image (text tower forward+backward per image)")
    big = out[-1]; t = big['timers']
    ep1 = sum(t['phase1_epoch']) / max(1, len(t['phase1_epoch'])); ep2 = sum(t['phase2_epoch']) / max(1, len(t['phase2_epoch']))
    extra1 = DEFAULT_BUDGET['rounds'] * DEFAULT_BUDGET['phase1_epochs'] - len(t['phase1_epoch'])
    extra2 = DEFAULT_BUDGET['rounds'] * DEFAULT_BUDGET['phase2_epochs'] - len(t['phase2_epoch'])
    est = big['wall_s'] + extra1 * ep1 + extra2 * ep2
    print(f"library-default budget (3 rounds x (3 Phase I + 3 Phase II epochs), no early stop) at n={big['n']}: "
          f"about {est / 60:.1f} min on these {a.threads} threads (measured epochs: Phase I {ep1:.1f} s, Phase II {ep2:.1f} s)")
    if a.filehash:                                   # the feature-cache key hashes image bytes: its cost at this scale
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_filehash
        fh = bench_filehash.run(a.filehash)
        print(f"cache key over {fh['n']} image files ({fh['mb']} MB): content-hashed {fh['content_s']} s vs "
              f"(path, size, mtime) {fh['stat_s']} s ({fh['ratio']}x), memoised {fh['memo_s']} s", flush=True)
    load1 = os.getloadavg()
    print(f"load(1 min) before={load0[0]:.2f} after={load1[0]:.2f} ({os.cpu_count()} cpus)")
    for r in out: print(f"n={r['n']} wall_s={r['wall_s']:.1f} peak_rss_mb={r['peak_rss_mb']:.0f}")


if __name__ == '__main__':
    main()
