"An infinite or NaN learning rate: the fit stops, says where (round, phase, epoch), and keeps the last finite state."
import numpy as np
import pytest
import torch

from multiclust.clip import tiny_clip
from multiclust.multisub import MultiSub


@pytest.fixture(scope='module')
def setup():
    enc = tiny_clip(seed=0)
    return enc, torch.randn(30, enc.feature_dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('kw, phase', [(dict(lr_latent=float('inf')), 'I'), (dict(lr_latent=float('nan')), 'I'),
                                       (dict(optimizer='adam', lr_latent=float('inf')), 'I'),
                                       (dict(lr_proj2=float('inf')), 'II')])
def test_nonfinite_learning_rate_stops_and_keeps_the_last_finite_state(setup, kw, phase):
    enc, feats = setup
    ms = MultiSub(enc, rounds=2, phase1_epochs=2, phase2_epochs=2, n_init=2, text_embeddings=False, eval_rounds=False,
                  sparse_proxies=False, **kw)
    r = ms.fit_features(feats, 'a fruit with the color of *', ['red', 'green', 'blue'], 3)
    assert r.status == 'nonfinite' and f'phase {phase}' in r.message and 'round 0' in r.message and 'epoch 0' in r.message
    assert r.history[-1]['event'] == 'nonfinite' and r.row()['status'] == 'nonfinite'
    for name in ('image', 'proxy_token', 'proxy_weights'):
        assert np.isfinite(np.asarray(r.embeddings[name])).all(), name
    assert r.labels.shape == (30,)
    if phase == 'I':   # stopped in the first Phase I epoch: the projection is the encoder's, untouched
        with torch.no_grad(): assert torch.allclose(torch.as_tensor(r.embeddings['image']), enc.project(feats), atol=1e-6)
