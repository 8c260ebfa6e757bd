"Integration and bad-input tests for the ALIGN and BLIP adapters (multiclust.hf_encoders)."
import pytest, torch
import torch.nn.functional as F
from PIL import Image
from multiclust.clip import load_encoder, PromptError, WeightsUnavailable
from multiclust.hf_encoders import (tiny_align, tiny_blip, load_align, load_blip, AlignEncoder, BlipEncoder,
                                    ALIGN_REPO, BLIP_REPO)

PROMPTS = ['a fruit with the color of *', 'a *', 'a card with the suit of * lying on a wooden table']
TINY = {'align': tiny_align, 'blip': tiny_blip}

@pytest.fixture(scope='module', params=['align', 'blip'])
def tiny(request):
    return TINY[request.param]()

def own_text_features(enc, ids):
    "The model's own text-feature path, entered with input_ids (no inputs_embeds)."
    m, mask = enc.model, enc.attention_mask(ids)
    with torch.no_grad():
        if isinstance(enc, AlignEncoder):
            return m.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return m.text_proj(m.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])

def images(enc, colours=('red', 'navy', 'white', 'olive')):
    return torch.stack([enc.preprocess(Image.new('RGB', (40, 30), c)) for c in colours])

def test_names_registered():
    with pytest.raises(ValueError, match='known encoders: align, auto, blip, .*tiny-align, tiny-blip'):
        load_encoder('no-such-encoder')
    enc = load_encoder('tiny-blip', seed=1)
    assert isinstance(enc, BlipEncoder) and enc.weights == 'random-init (tiny blip, seed 1)'

def test_token_path_equals_model_text_features(tiny):
    ids = tiny.tokenize(PROMPTS)
    with torch.no_grad():
        ours = tiny.encode_tokens(ids, tiny.token_embeddings(ids))
    assert (ours - own_text_features(tiny, ids)).abs().max() < 1e-5
    assert ours.shape == (3, tiny.embed_dim) and ours.std(0).mean() > 1e-2
    assert torch.allclose(tiny.encode_text(PROMPTS), ours)
    assert tiny.star_positions(ids, PROMPTS).tolist() == [7, 2, 7]

def test_padding_is_exact(tiny):
    "BERT towers are bidirectional: padding to 64 (ALIGN's processor default) must not change anything."
    ids = tiny.tokenize(PROMPTS)
    ids64 = tiny._tokenizer(PROMPTS, padding='max_length', max_length=64, return_tensors='pt')['input_ids']
    with torch.no_grad():
        a = tiny.encode_tokens(ids, tiny.token_embeddings(ids))
        b = tiny.encode_tokens(ids64, tiny.token_embeddings(ids64))
    assert (a - b).abs().max() < 1e-5

def test_proxy_changes_output_and_gets_gradient(tiny):
    ids = tiny.tokenize(PROMPTS)
    emb = tiny.token_embeddings(ids).detach()
    pos = tiny.star_positions(ids, PROMPTS)
    w = torch.zeros(3, requires_grad=True)                    # a convex mix of three reference words, like Multi-Sub
    refs = torch.stack([tiny.word_token_embedding(x) for x in ('red', 'green', 'sunflower')])
    proxy = w.softmax(0) @ refs
    emb2 = emb.clone(); emb2[0, pos[0]] = proxy
    out = tiny.encode_tokens(ids, emb2)
    with torch.no_grad(): base = tiny.encode_tokens(ids, emb)
    assert (out[0] - base[0]).abs().max() > 1e-4
    assert (out[1:] - base[1:]).abs().max() < 1e-5
    F.cosine_similarity(out[:1], torch.ones_like(out[:1])).sum().backward()
    assert w.grad.abs().sum() > 0

def test_encode_tokens_leaves_its_input_alone(tiny):
    "BLIP's embedding layer adds positions in place; the adapter must copy."
    ids = tiny.tokenize(PROMPTS)
    emb = tiny.token_embeddings(ids).detach()
    before = emb.clone()
    leaf = emb.clone().requires_grad_(True)
    tiny.encode_tokens(ids, leaf).sum().backward()
    tiny.encode_tokens(ids, emb)
    assert torch.equal(emb, before) and torch.isfinite(leaf.grad).all()

def test_image_split_is_exact(tiny):
    x = images(tiny)
    with torch.no_grad():
        feats = tiny.encode_image_features(x)
        mine = tiny.project(feats)
    assert feats.shape == (4, tiny.feature_dim) and mine.shape == (4, tiny.embed_dim)
    assert mine.std(0).mean() > 1e-2
    m = tiny.model
    with torch.no_grad():
        if isinstance(tiny, AlignEncoder):
            assert (mine - m.get_image_features(pixel_values=x).pooler_output).abs().max() < 1e-6
        else:
            ids = tiny.tokenize(PROMPTS)
            own = m(input_ids=ids, attention_mask=tiny.attention_mask(ids), pixel_values=x, use_itm_head=False).itm_score
            cos = F.normalize(mine, dim=-1) @ F.normalize(tiny.encode_text(PROMPTS), dim=-1).T
            assert (cos - own).abs().max() < 1e-5

def test_only_projection_trains_and_it_moves_the_output(tiny):
    trainable = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith('image_projection') for n in trainable)
    x = images(tiny)
    feats = tiny.encode_image_features(x)
    assert not feats.requires_grad
    opt = torch.optim.SGD(tiny.image_projection.parameters(), lr=0.1)
    before = tiny.project(feats).detach().clone()
    state = {k: v.clone() for k, v in tiny.image_projection.state_dict().items()}
    loss = -F.cosine_similarity(tiny.project(feats), torch.ones(1, tiny.embed_dim)).mean()
    loss.backward(); opt.step()
    assert (tiny.project(feats) - before).abs().max() > 0
    tiny.image_projection.load_state_dict(state)              # module-scoped fixture: put it back

def test_align_projection_starts_as_identity():
    enc = tiny_align()
    assert torch.equal(enc.image_projection.weight, torch.eye(enc.feature_dim))
    assert enc.image_projection.bias is None and 'identity' in enc.describe()['encoder_note']

def test_images_of_any_mode(tiny, tmp_path):
    Image.new('L', (40, 30), 90).save(tmp_path / 'g.png')
    Image.new('RGBA', (30, 40), (255, 0, 0, 100)).save(tmp_path / 'a.png')
    emb = tiny.encode_images([tmp_path / 'g.png', tmp_path / 'a.png'])
    assert emb.shape == (2, tiny.embed_dim) and torch.isfinite(emb).all()

def test_fingerprints_differ():
    fps = {tiny_align(0).fingerprint, tiny_align(1).fingerprint, tiny_blip(0).fingerprint}
    assert len(fps) == 3 and tiny_align(0).fingerprint == tiny_align(0).fingerprint

@pytest.mark.parametrize('kind', ['align', 'blip'])
def test_local_folder_roundtrip(kind, tmp_path):
    "A saved checkpoint folder goes through the real loading code and reproduces the model exactly."
    a = TINY[kind](seed=3)
    a.model.save_pretrained(tmp_path)
    import transformers
    proc_cls = transformers.AlignProcessor if kind == 'align' else transformers.BlipProcessor
    proc_cls(image_processor=a._image_processor, tokenizer=a._tokenizer).save_pretrained(tmp_path)
    b = (load_align if kind == 'align' else load_blip)(str(tmp_path), download=False)
    assert type(b) is type(a) and b.weights == str(tmp_path.resolve())
    ids = a.tokenize(PROMPTS)
    assert torch.equal(ids, b.tokenize(PROMPTS))
    x = images(a)
    with torch.no_grad():
        assert torch.equal(a.encode_tokens(ids, a.token_embeddings(ids)), b.encode_tokens(ids, b.token_embeddings(ids)))
        # the weights round-trip exactly; the image tower's outputs only to float tolerance, because CPU convolution
        # (oneDNN) may choose a different kernel for the reloaded tensors' memory layout (seen once: 1 ulp in the 4th decimal)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert torch.allclose(a.project(a.encode_image_features(x)), b.project(b.encode_image_features(x)), rtol=1e-5, atol=1e-5)
    assert torch.equal(a.preprocess(Image.new('RGB', (50, 20), 'teal')), b.preprocess(Image.new('RGB', (50, 20), 'teal')))

def test_checkpoint_missing_parameters_is_refused(tmp_path):
    "e.g. a BLIP captioning checkpoint has no vision_proj/text_proj: never fill those with random weights."
    from safetensors.torch import load_file, save_file
    import transformers
    a = tiny_blip()
    a.model.save_pretrained(tmp_path)
    transformers.BlipProcessor(image_processor=a._image_processor, tokenizer=a._tokenizer).save_pretrained(tmp_path)
    sd = load_file(tmp_path / 'model.safetensors')
    save_file({k: v for k, v in sd.items() if not k.startswith('vision_proj')}, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
    with pytest.raises(WeightsUnavailable, match='vision_proj'):
        load_blip(str(tmp_path), download=False)

@pytest.mark.parametrize('loader,what', [(load_align, 'ALIGN'), (load_blip, 'BLIP')])
def test_missing_weights_name_repo_and_fix(loader, what, tmp_path):
    with pytest.raises(WeightsUnavailable, match=f"{what} weights 'multiclust-test/not-a-model'.*hf download multiclust-test/not-a-model"):
        loader('multiclust-test/not-a-model', download=False)
    with pytest.raises(WeightsUnavailable, match='folder not found: .*nowhere'):
        loader(str(tmp_path / 'nowhere'))
    with pytest.raises(WeightsUnavailable, match=f'could not load {what} from folder .*config.json'):
        loader(str(tmp_path))                                     # exists but empty

def test_bad_prompts_and_words_named():
    enc = tiny_align()
    with pytest.raises(PromptError, match="'a red fruit'"):
        enc.star_positions(enc.tokenize(['a red fruit']), ['a red fruit'])
    with pytest.raises(PromptError, match="'Żółw'.*UNK"):
        enc.word_token_embedding('Żółw')
    with pytest.raises(PromptError, match='tokenizes to nothing'):
        enc.word_token_embedding('')
    long = 'a ' * 70 + '*'
    with pytest.raises(PromptError, match=r'is 73 tokens long; .* at most 64'):
        enc.tokenize(['a *', long])

@pytest.mark.parametrize('loader', [load_align, load_blip])
def test_real_checkpoint_when_cached(loader):
    "Runs only where the public checkpoint is already in the Hugging Face cache (never downloads)."
    try:
        enc = loader(download=False)
    except WeightsUnavailable as e:
        pytest.skip(f"public checkpoint not cached here: {str(e)[:120]}")
    ids = enc.tokenize(PROMPTS)
    with torch.no_grad():
        assert (enc.encode_tokens(ids, enc.token_embeddings(ids)) - own_text_features(enc, ids)).abs().max() < 1e-5
    assert enc.star_positions(ids, PROMPTS).tolist() == [7, 2, 7]
    assert enc.weights.startswith(ALIGN_REPO if loader is load_align else BLIP_REPO)


def test_blip_is_blip1_and_rows_say_so():
    "The BLIP adapter is BLIP-1's retrieval model (not BLIP-2); its describe() note, recorded in every row, says so."
    enc = tiny_blip()
    assert type(enc.model).__name__ == 'BlipForImageTextRetrieval'
    from multiclust.hf_encoders import BLIP_REPO
    assert BLIP_REPO == 'Salesforce/blip-itm-base-coco'
    note = enc.describe()['encoder_note']
    assert note.startswith('BLIP-1') and 'not BLIP-2' in note
