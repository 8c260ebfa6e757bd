"Known-answer and bad-input tests for the MMD statistic and the encoder comparison (multiclust.mmd)."
import statistics
import numpy as np
import pytest, torch
from multiclust.clip import Encoder
from multiclust.mmd import (mmd2_unbiased, mmd_test, median_bandwidth, rbf_kernel, similarity_profiles, encoder_mmd)

def draw(seed, n=40, d=3, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    Y[:, 0] += shift
    return X, Y

def brute(X, Y, s, paired=False):
    "The estimator written out as loops over pairs."
    k = lambda a, b: float(np.exp(-((a - b) ** 2).sum() / (2 * s * s)))
    m, n = len(X), len(Y)
    if paired:
        return sum(k(X[i], X[j]) + k(Y[i], Y[j]) - k(X[i], Y[j]) - k(X[j], Y[i])
                   for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return (sum(k(X[i], X[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
            + sum(k(Y[i], Y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
            - 2 * sum(k(X[i], Y[j]) for i in range(m) for j in range(n)) / (m * n))

@pytest.mark.parametrize('m,n,paired', [(7, 5, False), (6, 6, False), (6, 6, True)])
def test_matches_the_formula(m, n, paired):
    rng = np.random.default_rng(m + n)
    X, Y = rng.normal(size=(m, 4)), rng.normal(size=(n, 4)) + 0.3
    assert mmd2_unbiased(X, Y, bandwidth=0.9, paired=paired) == pytest.approx(brute(X, Y, 0.9, paired), abs=1e-12)
    Z = np.concatenate([X, Y])
    d = [np.linalg.norm(Z[a] - Z[b]) for a in range(len(Z)) for b in range(a + 1, len(Z))]
    assert median_bandwidth(X, Y) == pytest.approx(statistics.median(d), abs=1e-10)
    assert mmd2_unbiased(X, Y, paired=paired) == pytest.approx(brute(X, Y, statistics.median(d), paired), abs=1e-10)

def test_same_distribution_is_zero_on_average():
    vals = torch.tensor([mmd2_unbiased(*draw(s)) for s in range(20)])
    assert vals.mean().abs() < 3 * vals.std() / 20 ** 0.5        # unbiased: scatters around 0 ...
    assert (vals < 0).any()                                    # ... and so is sometimes negative
    assert vals.mean().abs() < 0.1 * mmd2_unbiased(*draw(0, shift=1.0))

def test_grows_with_the_shift():
    vals = [mmd2_unbiased(*draw(1, shift=s)) for s in (0.5, 1.0, 2.0)]
    assert vals[0] < vals[1] < vals[2]
    fixed = [mmd2_unbiased(*draw(1, shift=s), bandwidth=1.5) for s in (0.5, 1.0, 2.0)]
    assert fixed[0] < fixed[1] < fixed[2]

@pytest.mark.parametrize('paired', [False, True])
def test_symmetric(paired):
    X, Y = draw(2, shift=0.7)
    assert mmd2_unbiased(X, Y, paired=paired) == pytest.approx(mmd2_unbiased(Y, X, paired=paired), abs=1e-12)
    assert mmd_test(X, Y, n_perm=0)['mmd2'] == pytest.approx(mmd_test(Y, X, n_perm=0)['mmd2'], abs=1e-12)

def test_permutation_p_values():
    shift = mmd_test(*draw(3, shift=1.5), n_perm=200, seed=0)
    same = mmd_test(*draw(3), n_perm=200, seed=0)
    assert shift['p_value'] == 1 / 201 and same['p_value'] > 0.05
    assert set(shift) >= {'mmd2', 'p_value', 'bandwidth', 'n_x', 'n_y'} and (shift['n_x'], shift['n_y']) == (40, 40)
    again = mmd_test(*draw(3), n_perm=200, seed=0)
    assert again == same                                          # seeded
    # the p-value under H0 is roughly uniform: over 30 null draws, about 5% fall below 0.05 (allow 0..5)
    ps = [mmd_test(*draw(100 + s, n=20), n_perm=99, seed=s)['p_value'] for s in range(30)]
    assert sum(p <= 0.05 for p in ps) <= 5 and max(ps) > 0.5

def test_paired_test_detects_a_shift_and_swaps_pairs():
    X, Y = draw(4, n=30)
    noise = torch.randn(30, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    Yc = X + 0.05 * noise                                         # a slightly perturbed copy: same distribution
    r = mmd_test(X, Yc, n_perm=200, paired=True)
    assert abs(r['mmd2']) < 1e-2 and r['p_value'] > 0.05
    r = mmd_test(X, X + torch.tensor([1.0, 0, 0], dtype=torch.float64), n_perm=200, paired=True)
    assert r['mmd2'] > 0.05 and r['p_value'] < 0.01 and r['paired']

def test_unequal_sizes_and_identical_points():
    X, Y = draw(5)
    assert np.isfinite(mmd2_unbiased(X, Y[:13]))
    Z = torch.zeros(5, 2, dtype=torch.float64)
    assert mmd_test(Z, Z.clone(), n_perm=20)['mmd2'] == 0 and median_bandwidth(Z, Z) == 1.0

def test_rbf_kernel_values():
    X, Y = draw(6)
    K = rbf_kernel(X, Y, 2.0)
    assert K.shape == (40, 40) and float(K[3, 5]) == pytest.approx(float(torch.exp(-((X[3] - Y[5]) ** 2).sum() / 8)), abs=1e-12)

def test_bad_inputs_named():
    X, Y = draw(7)
    with pytest.raises(ValueError, match='X has 3 features and Y has 2.*encoder_mmd'):
        mmd2_unbiased(X, Y[:, :2])
    with pytest.raises(ValueError, match='Y has 1 sample'):
        mmd2_unbiased(X, Y[:1])
    Xn = X.clone(); Xn[4, 1] = float('nan')
    with pytest.raises(ValueError, match='X has NaN or inf values .*row 4'):
        mmd_test(Xn, Y)
    with pytest.raises(ValueError, match='paired=True needs X and Y of equal length'):
        mmd2_unbiased(X, Y[:10], paired=True)
    with pytest.raises(ValueError, match='must be 2-D'):
        mmd2_unbiased(X[:, 0], Y)
    with pytest.raises(ValueError, match='n_perm'):
        mmd_test(X, Y, n_perm=-1)
    with pytest.raises(ValueError, match='bandwidth must be positive'):
        mmd2_unbiased(X, Y, bandwidth=0)

class Fixed(Encoder):
    "Test double: text features looked up from a table."
    def __init__(self, table: dict, name='fixed'):
        super().__init__()
        self.table, self.name, self.weights = table, name, 'test double'
    def encode_text(self, prompts): return torch.stack([self.table[p] for p in prompts])

TEXTS = [f'text {i}' for i in range(24)]

def fixed(feats, name):
    return Fixed(dict(zip(TEXTS, feats)), name)

def test_similarity_profiles():
    E = torch.randn(5, 7, dtype=torch.float64)
    S = similarity_profiles(E)
    assert S.shape == (5, 5) and torch.allclose(S.diagonal(), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(similarity_profiles(3 * E), S)             # scale-free: features are L2-normalised first

def test_encoder_mmd_is_width_and_rotation_invariant():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(24, 16, generator=g)
    Q = torch.linalg.qr(torch.randn(40, 16, generator=g))[0]         # (40, 16) orthonormal columns
    wide = A @ Q.T                                                   # the same geometry in a 40-d space, rotated
    r = encoder_mmd(fixed(A, 'a'), fixed(wide, 'wide'), TEXTS, n_perm=100)
    assert abs(r['mmd2']) < 1e-10 and r['p_value'] == 1.0
    assert (r['width_a'], r['width_b'], r['n_texts']) == (16, 40, 24)
    assert r['encoder_a'] == 'a' and r['encoder_b'] == 'wide' and 'similarity profiles' in r['representation']

def test_encoder_mmd_grows_as_geometry_departs():
    "Mixing in more independent noise moves B's geometry further from A's: MMD grows, and clearly differs at the end."
    g = torch.Generator().manual_seed(1)
    # A: 4 tight groups of 6 texts (like 4 concepts' words); noise breaks the grouping
    centres = torch.randn(4, 12, generator=g) * 3
    A = centres.repeat_interleave(6, 0) + torch.randn(24, 12, generator=g)
    N = torch.randn(24, 20, generator=g) * 4
    vals = []
    for t in (0.25, 0.5, 1.0):
        B = torch.cat([A * (1 - t), N * t], 1)                       # width 32 vs 12
        vals.append(encoder_mmd(fixed(A, 'a'), fixed(B, 'b'), TEXTS, n_perm=200, bandwidth=1.0))
    assert vals[0]['mmd2'] < vals[1]['mmd2'] < vals[2]['mmd2']
    assert vals[2]['p_value'] < 0.01

def test_encoder_mmd_real_adapters_and_bad_texts():
    from multiclust.hf_encoders import tiny_align, tiny_blip
    a, b = tiny_align(), tiny_blip()
    texts = ['a red fruit', 'a green fruit', 'a blue car', 'a happy face', 'a sad face', 'a wooden table']
    r = encoder_mmd(a, b, texts, n_perm=50, batch_size=4)             # batching must not change anything
    r1 = encoder_mmd(a, b, texts, n_perm=50, batch_size=256)
    assert r['mmd2'] == pytest.approx(r1['mmd2'], abs=1e-5)   # float32 towers: padding length changes rounding only
    assert (r['width_a'], r['width_b']) == (32, 16)
    assert r['weights_a'].startswith('random-init')
    with pytest.raises(ValueError, match="'a red fruit' appears twice"):
        encoder_mmd(a, b, texts + ['a red fruit'])
    with pytest.raises(ValueError, match='at least 3 texts'):
        encoder_mmd(a, b, texts[:2])

def test_per_concept_sees_only_each_concepts_geometry():
    """B rotates each concept's texts by its own orthogonal map: every within-concept geometry is A's (MMD 0 per
    concept), but the cross-concept cosines change, so the pooled value is clearly positive."""
    from multiclust.mmd import encoder_mmd_per_concept
    g = torch.Generator().manual_seed(3)
    A = torch.randn(24, 16, generator=g, dtype=torch.float64)
    Qs = [torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0] for _ in range(3)]
    B = torch.cat([A[8 * i:8 * (i + 1)] @ Qs[i] for i in range(3)])
    ea, eb = fixed(A, 'a'), fixed(B, 'b')
    groups = {c: TEXTS[8 * i:8 * (i + 1)] for i, c in enumerate(['color', 'shape', 'size'])}
    per = encoder_mmd_per_concept(ea, eb, groups, n_perm=50)
    assert [r['concept'] for r in per] == ['color', 'shape', 'size'] and all(r['status'] == 'ok' for r in per)
    assert all(abs(r['mmd2']) < 1e-10 and r['n_texts'] == 8 for r in per)
    pooled = encoder_mmd(ea, eb, TEXTS, n_perm=50)
    assert pooled['mmd2'] > 1e-3
    assert per[0]['encoder_a'] == 'a' and per[0]['encoder_b'] == 'b'

def test_per_concept_bad_input_names_the_concept():
    from multiclust.mmd import encoder_mmd_per_concept
    A = torch.randn(24, 8, generator=torch.Generator().manual_seed(4))
    ea = fixed(A, 'a')
    short = encoder_mmd_per_concept(ea, ea, {'glass': TEXTS[:2], 'pose': TEXTS[2:6]}, n_perm=10)
    assert short[0]['mmd2'] is None and short[0]['status'].startswith('too few texts: 2') and short[1]['status'] == 'ok'
    with pytest.raises(ValueError, match="concept 'pose': text 'text 2' appears twice"):
        encoder_mmd_per_concept(ea, ea, {'pose': TEXTS[2:6] + ['text 2']})
    with pytest.raises(ValueError, match='must be a dict'):
        encoder_mmd_per_concept(ea, ea, TEXTS)
