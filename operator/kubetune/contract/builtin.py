"""What builtin://tiny is, for the runtime that builds it and for plans that read it unbuilt."""

from __future__ import annotations

from typing import Any

# The tiny model's transformers config (LlamaConfig keys); its vocabulary is the tokenizer's
# trained with it, at most TINY_VOCAB. head_dim 32: vLLM's CPU attention needs >= 32.
TINY_MODEL: dict[str, Any] = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
TINY_VOCAB = 512
TINY_SPLITS = {"train": 256, "test": 32}  # rows of each split, in every format
