"""Benchmark: everything GPU-related in one short run (issue 22), for a machine with a CUDA GPU.

1. One quick Multi-Sub fit (`MultiSub.QUICK`) on N random cached features with the ViT-B-32-sized text tower
   (random init, no download), on the CPU and on CUDA in the same run: wall times, their ratio, and the NMI
   between the two label vectors (the same fit on two devices should agree).
2. `bench_scale.py --device cuda` with the paper's schedule, 3 rounds x (100 + 10) epochs, on 60,000 features.
3. `tests/test_devices.py`'s CUDA test (quick fits on CUDA vs CPU, every kind of method).

    OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/bench_gpu.py [--n 2000] [--scale-n 60000] [--threads 2]

Every line names the device. Exits with a clear message on a machine without CUDA. Not collected by pytest.
"""
import argparse, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def quick_fit(device, n, threads):
    import torch
    sys.path.insert(0, HERE)
    from bench_scale import vit_b32_random, TEMPLATE, WORDS
    from multiclust.multisub import MultiSub
    enc = vit_b32_random().to(device)
    feats = torch.randn(n, enc.feature_dim, generator=torch.Generator().manual_seed(0))   # "from the cache": on the CPU
    t0 = time.perf_counter()
    res = MultiSub(enc, **{**MultiSub.QUICK, 'threads': threads, 'seed': 0}).fit_features(feats, TEMPLATE, WORDS, 3)
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='images for the quick CPU-vs-CUDA fit')
    ap.add_argument('--scale-n', type=int, default=60000, help="features for the paper's schedule on CUDA (0: skip)")
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    a = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available(): raise SystemExit("bench_gpu: no CUDA GPU on this machine (torch.cuda.is_available() is False)")
    torch.set_num_threads(a.threads)
    gpu = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); GPU: {gpu}; CPU threads {a.threads}", flush=True)
    from multiclust.metrics import nmi
    quick_fit('cuda', 256, a.threads)                                   # warm-up: CUDA context, kernels, allocator
    t_cpu, r_cpu = quick_fit('cpu', a.n, a.threads)
    t_gpu, r_gpu = quick_fit('cuda', a.n, a.threads)
    print(f"quick Multi-Sub fit, {a.n} images, ViT-B-32-sized text tower: cpu ({a.threads} threads) {t_cpu:.1f} s, "
          f"cuda ({gpu}) {t_gpu:.1f} s, ratio {t_cpu / t_gpu:.1f}x; label agreement NMI {nmi(r_cpu.labels, r_gpu.labels):.3f}; "
          f"rows say device={r_gpu.encoder['device']}, dtype={r_gpu.encoder['dtype']}", flush=True)
    if a.scale_n:
        print(f"paper's schedule on {gpu}: bench_scale.py --device cuda --ns {a.scale_n} --rounds 3 --phase1-epochs 100 "
              f"--phase2-epochs 10", flush=True)
        subprocess.run([sys.executable, os.path.join(HERE, 'bench_scale.py'), '--device', 'cuda', f'--ns={a.scale_n}',
                        '--rounds=3', '--phase1-epochs=100', '--phase2-epochs=10', '--filehash=0',
                        f'--threads={a.threads}'], check=True)
    subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', os.path.join(HERE, '..', 'test_devices.py'), '-k', 'cuda'],
                   check=True)


if __name__ == '__main__':
    main()
