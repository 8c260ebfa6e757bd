"Integration and bad-input tests for the encoder seam (multiclust.clip)."
import pytest, torch
from PIL import Image
from multiclust.clip import (load_encoder, load_openclip, tiny_clip, TINY_VIT, open_image,
                             ImageDecodeError, PromptError, WeightsUnavailable)

def test_unknown_encoder_lists_known():
    with pytest.raises(ValueError, match='known encoders: .*offline.*openclip.*tiny'):
        load_encoder('clip-vit-huge')

def test_local_checkpoint_roundtrip(tmp_path):
    "A checkpoint file on disk loads through the real open_clip path and reproduces the model exactly."
    a = tiny_clip(seed=3)
    ckpt = tmp_path / 'tiny.pt'
    torch.save(a.model.state_dict(), ckpt)
    b = load_openclip(TINY_VIT, pretrained=str(ckpt))
    ids = a.tokenize(['a car with the color of *'])
    with torch.no_grad():
        assert torch.equal(a.encode_tokens(ids, a.token_embeddings(ids)), b.encode_tokens(ids, b.token_embeddings(ids)))
    assert b.weights == str(ckpt)

def test_missing_checkpoint_says_which_file(tmp_path):
    with pytest.raises(WeightsUnavailable, match='not found: .*nope.pt'):
        load_openclip(TINY_VIT, pretrained=str(tmp_path / 'nope.pt'))

def test_named_model_without_weights_is_an_error_not_random(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path))
    with pytest.raises(WeightsUnavailable, match='timm/vit_base_patch32_clip_224.openai'):
        load_openclip('ViT-B-32', 'openai', download=False)

def test_auto_falls_back_to_offline_and_says_so(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path))
    enc = load_encoder('auto')
    assert enc.name == 'offline'
    assert 'offline' in enc.note and enc.describe()['encoder'] == 'offline'
    assert any('offline' in r.getMessage() for r in caplog.records)

@pytest.mark.parametrize('arch', ['vit', 'resnet'])
def test_tiny_token_path_equals_encode_text(arch):
    enc = tiny_clip(arch=arch)
    prompts = ['a *', 'a face with the pose of *', 'a card with the suit of * lying on a wooden table']
    ids = enc.tokenize(prompts)
    with torch.no_grad():
        d = (enc.encode_tokens(ids, enc.token_embeddings(ids)) - enc.model.encode_text(ids)).abs().max()
    assert d < 1e-5
    assert enc.star_positions(ids, prompts).tolist() == [2, 7, 7]

def test_offline_token_path_and_gradient(offline_encoder):
    enc = offline_encoder
    prompts = ['a flower with the species of *', 'a *']
    ids = enc.tokenize(prompts)
    emb = enc.token_embeddings(ids).detach().clone()
    pos = enc.star_positions(ids, prompts)
    proxy = enc.word_token_embedding('sunflower').clone().requires_grad_(True)
    emb2 = emb.clone(); emb2[0, pos[0]] = proxy
    out = enc.encode_tokens(ids, emb2)
    assert (out[0] - enc.encode_tokens(ids, emb)[0]).abs().max() > 1e-4
    out[0].sum().backward()
    assert proxy.grad.abs().sum() > 0

def test_prompt_without_star_named(offline_encoder):
    with pytest.raises(PromptError, match="'a red fruit'"):
        offline_encoder.star_positions(offline_encoder.tokenize(['a red fruit']), ['a red fruit'])

def test_word_that_tokenizes_to_nothing(offline_encoder):
    with pytest.raises(PromptError, match='tokenizes to nothing'):
        offline_encoder.word_token_embedding('')

def test_images_converted_and_bad_file_named(tmp_path, offline_encoder):
    Image.new('L', (40, 30), 90).save(tmp_path / 'g.png')
    Image.new('RGBA', (30, 40), (255, 0, 0, 100)).save(tmp_path / 'a.png')
    (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8garbage')
    emb = offline_encoder.encode_images([tmp_path / 'g.png', tmp_path / 'a.png'])
    assert emb.shape == (2, offline_encoder.embed_dim) and torch.isfinite(emb).all()
    with pytest.raises(ImageDecodeError, match='bad.jpg'):
        open_image(tmp_path / 'bad.jpg')


@pytest.mark.data
def test_offline_encoder_aligns_images_with_the_names_of_their_classes():
    """The offline pair means something only if ImageNet index c carries the name of class c: car photos must be
    classified as cars and lie nearer the text 'a photo of a car' than faces do. A shuffled or reversed class list
    (a misaligned ConSE) fails both."""
    import numpy as np
    import torch.nn.functional as F
    from conftest import require_dataset
    from multiclust.data import load_dataset
    root = require_dataset('cars'); require_dataset('cmuface')
    enc = load_encoder('offline')
    cars, faces = (load_dataset(n, root=root) for n in ('cars', 'cmuface'))
    pick = lambda ds: [ds.load_image(int(i)) for i in np.linspace(0, len(ds) - 1, 12).astype(int)]
    with torch.no_grad():
        xc, xf = (torch.stack([enc.preprocess(im) for im in pick(ds)]) for ds in (cars, faces))
        top1 = enc.cnn(xc).argmax(-1).tolist()
        img = F.normalize(enc.project(enc.encode_image_features(torch.cat([xc, xf]))), dim=-1)
        txt = F.normalize(enc.encode_text(['a photo of a car.', 'a photo of a face.']), dim=-1)
    vehicle = ('car', 'cab', 'convertible', 'jeep', 'limousine', 'minivan', 'pickup', 'racer', 'wagon', 'grille',
               'wheel', 'van', 'truck', 'bumper', 'moving van', 'police van', 'ambulance', 'tow truck', 'amphibian')
    names = [enc.classes[i] for i in top1]
    assert sum(any(v in n.lower() for v in vehicle) for n in names) >= 9, names
    s = (img @ txt.T)[:, 0] - (img @ txt.T)[:, 1]        # car-ness of every image
    assert s[:12].min() > s[12:].max() or (s[:12, None] > s[None, 12:]).float().mean() > 0.9
