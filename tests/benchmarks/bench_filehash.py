"""Benchmark: what the feature-cache key's content hash costs at 60,000 image files.

The key hashes every image's bytes (BLAKE2b), so two folders with the same names, sizes and mtimes but other
pixels never share features. This writes N CIFAR-sized files (32x32 PNG of random pixels, ~3 KB each) into a
temporary folder and times, in one run: the old signature (path, size, mtime: one stat per file), the content
signature on a new `Dataset` (stat + read + hash per file), and the same call again on that object (memoised
while size, mtime, ctime and inode stay put: stats only). The page cache is warm (the files were just written):
a cold disk adds its read time, which is the same read extraction does anyway.

    OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/bench_filehash.py [--n 60000]

`bench_scale.py` runs it too. The last line is `filehash n=<N> stat_s=... content_s=... memo_s=... ratio=...`.
"""
import argparse, hashlib, os, sys, tempfile, time


def run(n: int = 60000) -> dict:
    import numpy as np
    from PIL import Image
    from multiclust.data import Dataset
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = [f'images/{i // 1000:03d}/{i:06d}.png' for i in range(n)]
        for d in sorted({os.path.dirname(p) for p in paths}): os.makedirs(os.path.join(tmp, d))
        for p in paths: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(tmp, p))
        write_s = time.perf_counter() - t0
        mb = sum(os.path.getsize(os.path.join(tmp, p)) for p in paths) / 2**20
        labels = {'c': ['a', 'b'] * (n // 2) + ['a'] * (n % 2)}
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for p in paths:                                   # the signature before content hashing (v1 cache key)
            st = os.stat(os.path.join(tmp, p)); h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        stat_s = time.perf_counter() - t0
        ds = Dataset(tmp, paths, labels)
        t0 = time.perf_counter(); sig = ds.file_signature(); content_s = time.perf_counter() - t0
        t0 = time.perf_counter(); assert ds.file_signature() == sig; memo_s = time.perf_counter() - t0
    return dict(n=n, mb=round(mb, 1), write_s=round(write_s, 1), stat_s=round(stat_s, 3), content_s=round(content_s, 3),
                memo_s=round(memo_s, 3), ratio=round(content_s / max(stat_s, 1e-9), 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=60000)
    a = ap.parse_args(argv)
    r = run(a.n)
    print(f"{r['n']} files, {r['mb']} MB (written in {r['write_s']} s): old (path, size, mtime) signature {r['stat_s']} s; "
          f"content-hashed signature {r['content_s']} s ({r['ratio']}x); again on the same Dataset (memoised) {r['memo_s']} s")
    print(' '.join(['filehash'] + [f'{k}={v}' for k, v in r.items()]))


if __name__ == '__main__':
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
    main()
