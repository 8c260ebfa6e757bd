"""Benchmark: one Multi-Sub Phase I epoch, plain text path vs the fast (EOT-truncated + prefix-cached) path.

A random-init open_clip text tower of ViT-B-32's size (width 512, 8 heads, 12 layers, context 77,
embed_dim 512; the vision tower is tiny, it is not used: image features are random), 512 images,
prompt 'a fruit with the color of *' (9 tokens, `*` at 7). Both epochs run the library's own
`phase1_epoch` (forward, backward, Adam step) from identical initial states, in one process.
Exactness is measured on all 512 prompts at the initial state: outputs and gradients w.r.t. the proxies.

    .venv/bin/python tests/benchmarks/bench_phase1.py [--threads 2] [--n 512] [--batch-size 128]

Not collected by pytest (file name). The last line is
`speedup=<x> max_abs_diff=<d> max_rel_grad_diff=<r>`.
"""
import argparse, copy, os, statistics, time

import torch


def build_encoder(seed=0, device='cpu'):
    from multiclust.clip import load_openclip
    cfg = dict(embed_dim=512,
               vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
               text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return load_openclip(cfg, pretrained=None, device=device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=int(os.environ.get('MULTICLUST_THREADS', 2)))
    ap.add_argument('--n', type=int, default=512, help='images (prompts) per epoch')
    ap.add_argument('--batch-size', type=int, default=128)
    ap.add_argument('--fast-reps', type=int, default=5, help='fast epochs timed (median reported)')
    ap.add_argument('--skip-truncate', action='store_true', help='do not time the truncation-only path')
    ap.add_argument('--device', default='cpu', help="'cpu' (default) or e.g. 'cuda'")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from multiclust.proxy import Proxies, reference_embeddings, make_text_path, compare_paths, phase1_epoch

    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, device={args.device}, threads={torch.get_num_threads()}, cpus={os.cpu_count()}, "
          f"load(1/5/15 min)={load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}", flush=True)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    enc = build_encoder(device=args.device)
    template = 'a fruit with the color of *'
    words = ['red', 'yellow', 'green', 'orange', 'purple', 'blue', 'brown', 'black']
    Z = reference_embeddings(enc, words).cpu()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(args.n, enc.feature_dim, generator=g).to(dev)
    proxies0 = Proxies(Z, args.n, init_std=1.0, generator=g).to(dev)
    paths = {m: make_text_path(enc, template, m) for m in ('plain', 'truncate', 'prefix-cache')}
    print(f"text tower: width 512, 12 layers, 8 heads; prompt {template!r}: plain {paths['plain'].ids.shape[1]} tokens, "
          f"truncated {paths['truncate'].ids.shape[1]}, prefix {paths['prefix-cache'].P} + suffix "
          f"{paths['prefix-cache'].ids.shape[1] - paths['prefix-cache'].P}", flush=True)

    # exactness at the initial state, all prompts, in batches
    d, r = 0.0, 0.0
    W = proxies0().detach()
    for idx in torch.arange(args.n, device=dev).split(args.batch_size):
        c = compare_paths(enc, template, W[idx], fast='prefix-cache', ref='plain')
        d, r = max(d, c['max_abs_diff']), max(r, c['max_rel_grad_diff'])
    print(f"exactness (fp32, {args.n} prompts): max_abs_diff={d:.3g} max_rel_grad_diff={r:.3g}", flush=True)

    def epoch(mode):
        px, proj = copy.deepcopy(proxies0), copy.deepcopy(enc.image_projection)
        opt = torch.optim.Adam([{'params': px.parameters(), 'lr': 0.05}, {'params': proj.parameters(), 'lr': 1e-4}])
        sync(); t0 = time.perf_counter()
        loss = phase1_epoch(px, proj, feats, paths[mode], opt, args.batch_size, torch.Generator().manual_seed(1))
        sync()
        return time.perf_counter() - t0, loss

    epoch('prefix-cache')                                        # warm-up
    fast = [epoch('prefix-cache') for _ in range(args.fast_reps)]
    t_fast = statistics.median(t for t, _ in fast)
    print(f"prefix-cache epoch: {t_fast:.3f} s (median of {len(fast)}; loss {fast[0][1]:.6f})", flush=True)
    if not args.skip_truncate:
        t_tr, l_tr = epoch('truncate')
        print(f"truncate-only epoch: {t_tr:.3f} s (loss {l_tr:.6f}; {t_tr / t_fast:.1f}x the fast path)", flush=True)
    t_plain, l_plain = epoch('plain')
    print(f"plain epoch: {t_plain:.3f} s (loss {l_plain:.6f})", flush=True)
    if not args.skip_truncate: print(f"truncation alone: {t_plain / t_tr:.1f}x", flush=True)
    load1 = os.getloadavg()
    print(f"threads={torch.get_num_threads()} load before={load0[0]:.2f} after={load1[0]:.2f} (1-min averages, {os.cpu_count()} cpus)")
    print(f"speedup={t_plain / t_fast:.1f} max_abs_diff={d:.3g} max_rel_grad_diff={r:.3g}")


if __name__ == '__main__':
    main()
