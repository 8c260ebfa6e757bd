#!/usr/bin/env bash
# The whole test suite, install included (README's second command; .ci/run calls exactly this).
# 1. project-local venv with pinned torch/nbdev  2. notebooks clean and every chapter keeps its outputs
# 3. export leaves no diff  4. every notebook executes (nbdev_test)  5. pytest (integration, CLI, bad input, the
# book's structure: tests/test_structure.py).
# Tests never touch the user's cache: MULTICLUST_CACHE is a fresh folder, removed at the end.
# `tools/test.sh --data-free` is the second pass .ci/run makes with MULTICLUST_DATA pointing at an empty folder:
# every notebook whose code reads the data root (tools/data_notebooks.py) again, and the pytest tests marked `data`
# (they must skip with their reason, not fail); README's command (the full pass) covers everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
PASS=${1:-full}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=$(mktemp)
if ! .venv/bin/pip install -q -e ".[dev]" >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" || true; rm -f "$log"
  echo "pip install -e .[dev] failed (output above)"; exit 1
fi
rm -f "$log"
# the gallery.html test renders in a real headless Chromium (Debian's package); as root we install it, else it skips
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium for the browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "WARNING: chromium could not be installed: tests/test_cluster.py's browser test will skip"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
export MULTICLUST_DATA=${MULTICLUST_DATA-$(cd .. && pwd)/shared/data}
export MPLBACKEND=Agg
MULTICLUST_CACHE=$(mktemp -d "${TMPDIR:-/tmp}/multiclust-test-cache.XXXXXX")
export MULTICLUST_CACHE
trap 'rm -rf "$MULTICLUST_CACHE"' EXIT
echo "== feature/data cache for this run: $MULTICLUST_CACHE (never ~/.cache/multiclust); data root: ${MULTICLUST_DATA:-(none)}"

if [ "$PASS" = "--data-free" ]; then
  nbs=$(.venv/bin/python tools/data_notebooks.py)      # the notebooks whose code reads the data root
  echo "== data-free pass: the notebooks that read the data root execute (nbdev_test):" $nbs
  for nb in $nbs; do .venv/bin/nbdev_test --path "$nb" --n_workers 1; done
  echo "== data-free pass: pytest -m data (every one must skip with its reason or pass)"
  .venv/bin/pytest -q -rs -m data tests
  exit 0
fi

echo "== nbdev_clean leaves nothing to change"
before=$(git status --porcelain -- nbs)
.venv/bin/nbdev_clean
after=$(git status --porcelain -- nbs)
if [ "$before" != "$after" ]; then echo "nbdev_clean changed notebooks:"; git status --porcelain -- nbs; exit 1; fi

echo "== every chapter keeps its outputs (tools/run_book.py executed them in place; --check only reads them)"
.venv/bin/python tools/run_book.py --check

echo "== nbdev_export leaves no diff"
before=$(git status --porcelain -- multiclust)
.venv/bin/nbdev_export
after=$(git status --porcelain -- multiclust)
if [ "$before" != "$after" ]; then echo "nbdev_export changed multiclust/: the library is out of sync with nbs/"; git status --porcelain -- multiclust; exit 1; fi

echo "== notebooks execute (nbdev_test)"
.venv/bin/nbdev_test --n_workers 1 --timing

echo "== pytest"
.venv/bin/pytest -q tests
