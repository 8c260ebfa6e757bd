"""Command 1's quick budget is a converged one: through `run_method(..., quick=True)` (the way chapter 05 calls it),
Multi-Sub beats k-means on the toy CLIP's synthetic set for the concepts k-means cannot see (size, background)."""
import pytest


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "The toy CLIP, the 360 synthetic images and their features, in a temporary cache (never ~/.cache)."
    from multiclust.clip import load_encoder
    from multiclust.data import load_dataset
    from multiclust.features import extract_features
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MULTICLUST_CACHE', str(tmp_path_factory.mktemp('cache')))
        enc = load_encoder('toyclip')
        ds = load_dataset('synthetic')
        feats = extract_features(enc, ds, progress=False)
    return enc, ds, feats


@pytest.mark.parametrize('concept', ['size', 'background'])
def test_quick_multisub_beats_kmeans(toy, concept):
    from multiclust.methods import run_method
    enc, ds, feats = toy
    ms = run_method('multisub', enc, ds, concept, seed=0, feats=feats, quick=True)
    km = run_method('kmeans', enc, ds, concept, seed=0, feats=feats, quick=True)
    assert ms.status == 'ok' and not ms.params['collapsed'], ms.params['collapsed']
    assert ms.metrics['nmi'] > km.metrics['nmi'] + 0.2, (concept, ms.metrics['nmi'], km.metrics['nmi'])
