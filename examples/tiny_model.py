"""A small Llama-style model, built locally and deterministically, for vLLM tests and benchmarks.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on text in a generated
pseudo-language; the weights are drawn from a seeded generator. Building twice gives byte-identical
files. The model is cached in a directory named for its build parameters, under
$KVTIER_MODEL_CACHE or ~/.cache/kvtier/models, so changing a parameter builds a new model beside
the old one.

Run: python examples/tiny_model.py [--cache-dir DIR]   (builds if needed, prints the directory)
Needs torch, transformers and tokenizers (all installed with vLLM).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import itertools
import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUILD_FORMAT = 1
"""Bumped whenever the build code changes its output for the same parameters."""

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
"""Special tokens, which take the first ids in this order."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Every parameter that determines the built files; its fingerprint names the directory."""

    vocab_size: int = 8192
    hidden_size: int = 512
    intermediate_size: int = 1536
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    max_position_embeddings: int = 32768
    initializer_range: float = 0.1
    """Standard deviation of the random weights. At transformers' default (0.02) greedy decoding
    repeats one token whatever the prompt, so outputs could not show a wrong KV cache; at 0.1 the
    generated tokens depend on every part of the prompt."""
    seed: int = 0
    """Seeds both the corpus generator and the weight initialisation."""
    corpus_sentences: int = 40_000
    """Sentences of pseudo-language text the tokenizer is trained on."""
    lexicon_words: int = 30_000
    """Distinct words in the pseudo-language, used with Zipf-like frequencies."""
    sliding_window: int | None = None
    """Layers attend to this many tokens back (Mistral 7B v0.1's kind of model); None: full
    attention."""
    layer_types: tuple[str, ...] | None = None
    """With ``sliding_window``: each layer's kind, ``sliding_attention`` or ``full_attention``
    (Gemma 2/3's kind of model); None: every layer slides. With ``architecture="lfm2"``: ``conv``
    (a short-convolution state) or ``full_attention``."""
    architecture: str | None = None
    """None: Llama; ``lfm2``: LFM2 (short-convolution state layers and full-attention layers, a
    hybrid state model vLLM's CPU backend runs)."""

    @property
    def name(self) -> str:
        """Directory name: format version plus a short hash of every parameter (those left at
        None are left out, so adding one kept the names of the models built before)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        params = json.dumps(fields, sort_keys=True)
        digest = hashlib.sha256(f"{BUILD_FORMAT}:{params}".encode()).hexdigest()[:12]
        return f"tiny-llama-v{BUILD_FORMAT}-{digest}"


SPEC = ModelSpec()
"""The model that tests and benchmarks use: 78 MB of bf16 weights, 6 KiB of KV cache per token.

Sized so that prefill is slow enough to measure what reusing KV saves: through vLLM on two
Sapphire Rapids cores, 2k tokens take about 0.5 s, 8k about 3.6 s and 16k about 10 s.
"""


SMALL = dataclasses.replace(
    SPEC, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4
)
"""A tenth of SPEC's compute per token, for runs that serve many requests (the load test): 4
layers, 2 KV heads of 64, 3 KiB of bf16 KV cache per token."""

SLIDING = dataclasses.replace(SMALL, sliding_window=200)
"""SMALL whose every layer attends to the last 200 tokens: less than a 256-token chunk, more than
one of vLLM's CPU blocks (128), so long prompts free blocks while they run."""

MIXED = dataclasses.replace(
    SLIDING,
    layer_types=("sliding_attention", "full_attention", "sliding_attention", "full_attention"),
)
"""SLIDING with every other layer attending to the whole prompt (SMALL's weights: the same seed)."""

STATE = dataclasses.replace(
    SMALL,
    architecture="lfm2",
    layer_types=("conv", "full_attention", "conv", "full_attention"),
)
"""SMALL's size as an LFM2 model: every other layer keeps a short-convolution state per request
instead of KV per token (vLLM serves it with a Mamba-kind KV cache group)."""


def default_cache_dir() -> Path:
    """$KVTIER_MODEL_CACHE when set, else ~/.cache/kvtier/models."""
    configured = os.environ.get("KVTIER_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "kvtier" / "models"


def build(cache_dir: str | os.PathLike[str] | None = None, spec: ModelSpec = SPEC) -> Path:
    """Returns the directory of the model described by ``spec``, building it first if absent.

    Returns at once when the directory exists. Otherwise builds into a hidden sibling directory and
    renames it into place, so a reader never sees a partial model; when two processes build at
    once, one rename wins and the other process discards its copy. Blocks for the build (seconds).
    Raises OSError when the cache directory cannot be written.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / spec.name
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / f".{spec.name}.{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        _write_model(spec, scratch)
        try:
            scratch.rename(target)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def kv_bytes_per_token(spec: ModelSpec = SPEC, dtype: str = "bfloat16") -> int:
    """Bytes of KV cache one token takes in ``dtype``: every layer, K and V, every KV head."""
    head_size = spec.hidden_size // spec.num_attention_heads
    element = {"bfloat16": 2, "float16": 2, "float32": 4}[dtype]
    return spec.num_hidden_layers * 2 * spec.num_key_value_heads * head_size * element


def prompt(n_tokens: int, seed: int, spec: ModelSpec = SPEC) -> list[int]:
    """Returns ``n_tokens`` token ids drawn uniformly from the vocabulary without special tokens.

    The same arguments always give the same ids; different seeds give prompts that share no
    prefix in practice. Needs no built model. Raises ValueError when ``n_tokens`` is negative.
    """
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    rng = random.Random(seed)
    return [rng.randrange(len(SPECIAL_TOKENS), spec.vocab_size) for _ in range(n_tokens)]


def corpus(spec: ModelSpec) -> Iterator[str]:
    """Yields the tokenizer's training text: sentences of a seeded pseudo-language, one a line.

    Words are built from syllables and drawn with Zipf-like frequencies, so the tokenizer learns
    whole common words and pieces of rare ones, as it would on natural text.
    """
    rng = random.Random(spec.seed)
    onsets = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "tr", "st", "pl", "kr", "gl", ""]
    vowels = [*"aeiou", "ai", "ou", "ea", "y"]
    codas = ["", "", "", *"nrlsmtk", "nd", "st"]
    lexicon = sorted(
        {
            "".join(
                rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))
            )
            for _ in range(spec.lexicon_words)
        }
    )
    rng.shuffle(lexicon)
    cumulative = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(lexicon))))
    for _ in range(spec.corpus_sentences):
        words = rng.choices(lexicon, cum_weights=cumulative, k=rng.randint(4, 24))
        for i in range(len(words)):
            if rng.random() < 0.05:
                words[i] = str(rng.randrange(10_000))
            elif rng.random() < 0.08:
                words[i] += ","
        words[0] = words[0].capitalize()
        yield " ".join(words) + rng.choice(".....?!")


def _write_model(spec: ModelSpec, directory: Path) -> None:
    # Imported here so that prompt() and the cache lookup need none of these packages.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(spec), trainer)
    if tokenizer.get_vocab_size() != spec.vocab_size:
        raise RuntimeError(
            f"the corpus yields {tokenizer.get_vocab_size()} tokens, not vocab_size="
            f"{spec.vocab_size}; raise corpus_sentences or lexicon_words"
        )
    bos, eos, unk = SPECIAL_TOKENS[1], SPECIAL_TOKENS[2], SPECIAL_TOKENS[0]
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        model_max_length=spec.max_position_embeddings,
    ).save_pretrained(directory)

    common = {
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "bos_token_id": SPECIAL_TOKENS.index(bos),
        "eos_token_id": SPECIAL_TOKENS.index(eos),
        "tie_word_embeddings": True,
        "initializer_range": spec.initializer_range,
    }
    if spec.architecture == "lfm2":
        _write_lfm2(spec, directory, common)
        return
    config = LlamaConfig(
        **common,
        dtype="bfloat16",
        **({"sliding_window": spec.sliding_window} if spec.sliding_window else {}),
        **({"layer_types": list(spec.layer_types)} if spec.layer_types else {}),
    )
    torch.manual_seed(spec.seed)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)


def _write_lfm2(spec: ModelSpec, directory: Path, common: dict[str, Any]) -> None:
    """An LFM2 model of ``common``'s sizes (the Llama config's) and ``spec.layer_types``."""
    import torch
    from transformers import Lfm2Config, Lfm2ForCausalLM

    config = Lfm2Config(
        **common, layer_types=list(spec.layer_types or ()), block_auto_adjust_ff_dim=False
    )
    torch.manual_seed(spec.seed)
    Lfm2ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    # vLLM's LFM2 reads these sizes, which transformers' config no longer writes.
    path = directory / "config.json"
    written = json.loads(path.read_text())
    written.update(
        conv_dim=spec.hidden_size,
        conv_dim_out=spec.hidden_size,
        block_dim=spec.hidden_size,
        block_ff_dim=spec.intermediate_size,
    )
    path.write_text(json.dumps(written, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", help=f"default: {default_cache_dir()}")
    print(build(parser.parse_args().cache_dir))


if __name__ == "__main__":
    main()
