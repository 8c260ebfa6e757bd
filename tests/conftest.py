import os
from pathlib import Path
import pytest
import torch

torch.set_num_threads(int(os.environ.get('MULTICLUST_THREADS', '2')))
REPO = Path(__file__).resolve().parents[1]

def shared_data_root():
    "The benchmark datasets: $MULTICLUST_DATA, else ../shared/data beside the checkout; None if absent."
    for p in (os.environ.get('MULTICLUST_DATA'), REPO.parent / 'shared' / 'data'):
        if p and Path(p).is_dir(): return Path(p)
    return None

BENCHMARK_SETS = ('cmuface', 'cars', 'cards')

def require_dataset(name: str) -> Path:
    "The data root holding `name`/labels.csv, else skip the test saying what is missing."
    root = shared_data_root()
    if root is None:
        pytest.skip(f"benchmark data not found: set MULTICLUST_DATA or put the sets in ../shared/data (needs {name})")
    if not (root / name / 'labels.csv').is_file():
        pytest.skip(f"dataset {name!r} not under the data root {root} (no {root / name / 'labels.csv'})")
    return root

@pytest.fixture
def cars_root():
    "The data root holding `cars` (the smallest benchmark set), else skip."
    return require_dataset('cars')

@pytest.fixture(scope='session')
def offline_encoder():
    from multiclust.clip import load_encoder
    return load_encoder('offline')

@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    "Generated data and features go to a temporary cache, never to ~/.cache (use with pytest.mark.usefixtures)."
    monkeypatch.setenv('MULTICLUST_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def pytest_configure(config):
    config.addinivalue_line('markers', "data: reads the benchmark data root; .ci/run reruns these with an empty one")

def pytest_collection_modifyitems(config, items):
    "Tests that take a data-root fixture are `data` tests (the data-free pass of .ci/run selects them with -m data)."
    for it in items:
        if 'cars_root' in getattr(it, 'fixturenames', ()): it.add_marker(pytest.mark.data)
