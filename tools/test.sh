#!/usr/bin/env bash
# The whole test suite, install included (README's second command; .ci/run calls exactly this).
# 1. project-local venv with pinned torch/nbdev  2. notebooks clean  3. export leaves no diff
# 4. every notebook executes (nbdev_test)  5. pytest (integration, CLI, bad input).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
export MULTICLUST_DATA=${MULTICLUST_DATA:-$(cd .. && pwd)/shared/data}
export MPLBACKEND=Agg

echo "== nbdev_clean leaves nothing to change"
before=$(git status --porcelain -- nbs)
.venv/bin/nbdev_clean
after=$(git status --porcelain -- nbs)
if [ "$before" != "$after" ]; then echo "nbdev_clean changed notebooks:"; git status --porcelain -- nbs; exit 1; fi

echo "== nbdev_export leaves no diff"
before=$(git status --porcelain -- multiclust)
.venv/bin/nbdev_export
after=$(git status --porcelain -- multiclust)
if [ "$before" != "$after" ]; then echo "nbdev_export changed multiclust/: the library is out of sync with nbs/"; git status --porcelain -- multiclust; exit 1; fi

echo "== notebooks execute (nbdev_test)"
.venv/bin/nbdev_test --n_workers 1 --timing

echo "== pytest"
.venv/bin/pytest -q tests
