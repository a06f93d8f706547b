"""CLIP and T5 tokenizers trained on the spot, so tiny and random pipelines never reach a hub.

They use the same pre-processing as the published tokenizers (CLIP: lower-cased byte-level BPE
with `</w>` word ends; T5: SentencePiece-style unigram) with a small vocabulary learnt from a
fixed synthetic corpus. Training is deterministic for a given corpus.
"""

from __future__ import annotations

import itertools
import json

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer, T5Tokenizer

from cluster.weights.architectures import TINY_CLIP_VOCAB, TINY_T5_VOCAB

_SUBJECTS = ["a cat", "a dog", "an astronaut", "a red fox", "a lighthouse", "a castle",
             "a robot", "a bowl of fruit", "a mountain lake", "a city street", "a forest",
             "a portrait of a woman", "an old man", "a sailing ship", "a dragon", "a teapot"]
_STYLES = ["in the style of an oil painting", "photorealistic", "watercolor", "at sunset",
           "cinematic lighting", "high detail", "4k", "studio photo", "pixel art", "sketch",
           "under the stars", "in the rain", "on the moon", "wide angle", "bokeh"]
_EXTRA = ("the quick brown fox jumps over the lazy dog 0123456789 , . ! ? ' \" - : ; ( ) "
          "blurry low quality ugly deformed text watermark bright dark blue green yellow purple")


def _corpus() -> list[str]:
    lines = [f"{s}, {t}" for s, t in itertools.product(_SUBJECTS, _STYLES)]
    return lines + [_EXTRA] * 4


def train_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE tokenizer with CLIP's pre-processing and special tokens."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_CLIP_VOCAB,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def train_t5_tokenizer() -> T5Tokenizer:
    """A unigram tokenizer with T5's special tokens at T5's ids (<pad>=0, </s>=1, <unk>=2)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=TINY_T5_VOCAB,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
