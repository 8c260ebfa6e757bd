#!/usr/bin/env bash
# What a new user's `multiclust cluster` costs, without --words, --k or a key (issue 25):
#  1. 300 generated toy scenes (make_synthetic n=300 seed=11, copied into a plain folder, labels kept aside), toy CLIP,
#     a fresh feature cache; prints the wall clock and the NMI against the hidden colours;
#  2. the cars and cmuface photos of $MULTICLUST_DATA symlinked into one folder (973 images), offline encoder, twice
#     (the second run finds the features cached).
# Usage: MULTICLUST_DATA=../shared/data OMP_NUM_THREADS=1 tools/cluster_speed.sh   (PYTHON=... to pick the interpreter)
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} MPLBACKEND=Agg
unset OPENAI_API_KEY OPENAI_BASE_URL
PY=${PYTHON:-.venv/bin/python}
W=$(mktemp -d "${TMPDIR:-/tmp}/multiclust-speed.XXXXXX")
export MULTICLUST_CACHE=$W/cache
$PY - "$W" <<'P'
import os, shutil, sys
from pathlib import Path
import pandas as pd
from multiclust.data import make_synthetic
W = Path(sys.argv[1])
s = make_synthetic(root=W / 'syn', n=300, seed=11)
d = W / 'p300'; d.mkdir()
for p in s.paths: shutil.copy(s.root / p, d / Path(p).name)
pd.DataFrame({'path': [Path(p).name for p in s.paths], 'color': s.labels('color')}).to_csv(W / 'truth300.csv', index=False)
d = W / 'p973'; d.mkdir()
root = Path(os.environ.get('MULTICLUST_DATA', ''))
for ds in ('cars', 'cmuface'):
    if not (root / ds / 'labels.csv').is_file(): print(f"skip {ds}: not under MULTICLUST_DATA"); continue
    for p in pd.read_csv(root / ds / 'labels.csv').path: os.symlink((root / ds / p).resolve(), d / f"{ds}__{p.replace('/', '__')}")
print(len(os.listdir(W / 'p300')), 'toy images;', len(os.listdir(d)), 'real images')
P
CL="from multiclust.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
echo "threads $OMP_NUM_THREADS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "WALL %e s (toy CLIP, 300 images, features extracted)" $PY -c "$CL" cluster $W/p300 --by color --object shape \
  --encoder toyclip --no-progress --out $W/o300 --export folders --labels $W/truth300.csv
if [ -n "$(ls $W/p973)" ]; then
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "WALL %e s (offline, $(ls $W/p973 | wc -l) images, 1st run: features extracted)" $PY -c "$CL" cluster $W/p973 --by color --encoder offline --no-progress --out $W/o1
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "WALL %e s (offline, 2nd run: features cached)" $PY -c "$CL" cluster $W/p973 --by color --encoder offline --no-progress --out $W/o2
fi
echo "outputs in $W"
