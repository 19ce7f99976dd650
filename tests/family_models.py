"""Tiny random models and real tokenizers of every BERT-style family, built in-process (no Hub), for the tests.

Tokenizers were trained on CORPUS with the `tokenizers` library, in the kind each family's checkpoints ship with
(WordPiece, byte-level BPE, Unigram) and with its special-token layout, and are read from tests/fixtures/tokenizers
(`python -m tests.family_models` trains and writes them again), then wrapped in the family's own tokenizer class.
Models are tiny (hidden 32, 4 heads, FFN 64) random task models over that tokenizer's vocabulary. Nothing here imports
hf_compress, so the support-table generator can read the matrix without it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AlbertTokenizer,
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizer,
    DebertaV2Tokenizer,
    DistilBertTokenizer,
    ElectraTokenizer,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    RobertaTokenizer,
    XLMRobertaTokenizer,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A lazy afternoon: the dog sleeps while the fox watches the birds.",
    "Hello world, this is a small corpus for training tiny tokenizers.",
    "Tokenizers split words into pieces; frequent words stay whole.",
    "Rare words such as quokka, zeppelin or xylophone break into smaller pieces.",
    "The museum opened a new exhibition about ancient rivers and mountains.",
    "Children played football in the park until the sun went down.",
    "She bought fresh bread, cheese and apples at the market on Saturday.",
    "Our train was delayed by twenty minutes because of the heavy snow.",
    "He reads a chapter of his favourite novel every night before sleeping.",
    "The weather today is sunny with a light breeze from the west.",
    "Scientists measured the temperature of the lake every morning for a year.",
    "Please send the report by Friday so that we can review it together.",
    "The orchestra played a quiet melody, then the drums grew louder and louder.",
    "Coffee, tea or juice? The café serves all three with breakfast.",
    "A naive question can still lead to an interesting answer.",
    "Mountains, forests and rivers cover most of the northern region.",
    "The company released version 2.0 of its software in March 2024.",
    "Birds migrate south in autumn and return north in spring.",
    "I would like a window seat and a cup of hot chocolate, please.",
    "The library is quiet, but the garden outside is full of noise.",
    "Engineers tested the bridge with heavy trucks before it opened.",
    "The cat jumped onto the table and knocked over a glass of water.",
    "Running every morning keeps him healthy and cheerful all day.",
    "The recipe needs flour, sugar, eggs, butter and a pinch of salt & pepper.",
    "Students asked the teacher about the history of the old castle.",
    "The river flows through the city and into the wide blue sea.",
    "New ideas often start as small experiments in a quiet room.",
    "The jumping frog won the race against the slow and sleepy turtle.",
    "Waffles with berries and cream were served at the summer festival.",
]
KINDS = ("WordPiece", "byte-level BPE", "Unigram")
# family: the tokenizer kind and class its checkpoints ship with, and the layout of its special tokens
TOKENIZERS = {
    "bert": ("WordPiece", BertTokenizer, "bert"),
    "distilbert": ("WordPiece", DistilBertTokenizer, "bert"),
    "electra": ("WordPiece", ElectraTokenizer, "bert"),
    "roberta": ("byte-level BPE", RobertaTokenizer, "roberta"),
    "xlm-roberta": ("Unigram", XLMRobertaTokenizer, "roberta"),
    "deberta-v2": ("Unigram", DebertaV2Tokenizer, "bert"),
    "mpnet": ("WordPiece", MPNetTokenizer, "roberta"),  # BERT's WordPiece with RoBERTa's special tokens
    "albert": ("Unigram", AlbertTokenizer, "albert"),
}
# special token -> its roles, in vocabulary order
LAYOUTS = {
    "bert": {
        "[PAD]": ("pad_token",),
        "[UNK]": ("unk_token",),
        "[CLS]": ("cls_token", "bos_token"),
        "[SEP]": ("sep_token", "eos_token"),
        "[MASK]": ("mask_token",),
    },
    "roberta": {
        "<s>": ("cls_token", "bos_token"),
        "<pad>": ("pad_token",),
        "</s>": ("sep_token", "eos_token"),
        "<unk>": ("unk_token",),
        "<mask>": ("mask_token",),
    },
    "albert": {
        "<pad>": ("pad_token",),
        "<unk>": ("unk_token",),
        "[CLS]": ("cls_token", "bos_token"),
        "[SEP]": ("sep_token", "eos_token"),
        "[MASK]": ("mask_token",),
    },
}

# The task heads the family tests cover, by the names to_albert's messages use.
SEQUENCE, TOKEN, QA = "sequence classification", "token classification", "question answering"
EMBEDDING = "sentence embedding"  # a base model: its last hidden state, pooled by the user (sentence-transformers)
HEADS = {
    SEQUENCE: AutoModelForSequenceClassification,
    TOKEN: AutoModelForTokenClassification,
    QA: AutoModelForQuestionAnswering,
    EMBEDDING: AutoModel,
}
NUM_LABELS = 3


def roles(layout: str) -> dict[str, str]:
    """special-token role (pad_token, cls_token, ...) -> the token, in a layout."""
    return {role: token for token, rs in LAYOUTS[layout].items() for role in rs}


def train(kind: str, layout: str, without: str | None = None) -> str:
    """tokenizer.json of a `kind` tokenizer trained on CORPUS, `layout`'s special tokens first (except `without`)."""
    specials, named = [t for t in LAYOUTS[layout] if t != without], roles(layout)
    if kind == "WordPiece":  # as BERT
        tok = Tokenizer(models.WordPiece(unk_token=named["unk_token"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=700, special_tokens=specials)
    elif kind == "byte-level BPE":  # as RoBERTa / GPT-2
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, initial_alphabet=alphabet)
    else:  # Unigram, as XLM-R: whitespace split, then Metaspace
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token=named["unk_token"])
    tok.train_from_iterator(CORPUS, trainer)
    cls, sep = named["cls_token"], named["sep_token"]
    if kind == "byte-level BPE" or layout == "roberta" and kind == "WordPiece":  # RoBERTa's (and MPNet's)
        tok.post_processor = processors.RobertaProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    return tok.to_str()


FIXTURES = Path(__file__).parent / "fixtures" / "tokenizers"
# Every (kind, layout, without) the tests use: each kind in each layout, and byte-level BPE without a pad token.
TRAINED = [(kind, layout, None) for kind in KINDS for layout in LAYOUTS] + [("byte-level BPE", "roberta", "<pad>")]


def _fixture(kind: str, layout: str, without: str | None) -> Path:
    name = f"{kind}-{layout}" + (f"-without-{without.strip('<>[]')}" if without else "")
    return FIXTURES / f"{name.lower().replace(' ', '-')}.json"


@functools.cache
def trained(kind: str, layout: str, without: str | None = None) -> str:
    """tokenizer.json of `train(kind, layout, without)`, as trained once and stored in tests/fixtures/tokenizers.

    Why stored: the WordPiece and Unigram trainers break ties in hash-map order, which changes from process to
    process (measured: 660 to 663 WordPiece tokens, Unigram pieces in another order), so training in each test
    process gave each run other token ids, other calibration text and other tiny models' decisions."""
    path = _fixture(kind, layout, without)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: write it with `python -m tests.family_models`")
    return path.read_text()


def family_tokenizer(family: str, directory) -> PreTrainedTokenizerFast:
    """The family's own tokenizer class over its kind trained on CORPUS, saved in `directory` and loaded back with
    AutoTokenizer, as a user has it."""
    kind, tokenizer_class, layout = TOKENIZERS[family]
    tokenizer_class(tokenizer_object=Tokenizer.from_str(trained(kind, layout)), **roles(layout)).save_pretrained(
        directory
    )
    return AutoTokenizer.from_pretrained(directory)


def family_config(family: str, tokenizer, num_layers: int = 2, resize: bool = True, **overrides):
    """A tiny config of `family` over the tokenizer's vocabulary: hidden 32, 4 heads, FFN 64, 64 positions, no dropout.

    ELECTRA factorises its embeddings (E=16 < H, as ELECTRA-small's 128 < 256); DeBERTa-v2 is DeBERTa-v3 shaped
    (relative positions only). With `resize` the vocabulary is the tokenizer's own, without tokens added after it.
    """
    if family == "distilbert":
        size = dict(dim=32, n_layers=num_layers, n_heads=4, hidden_dim=64, dropout=0.0, attention_dropout=0.0)
    else:
        size = dict(hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4, intermediate_size=64)
        size.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if family in ("albert", "electra"):
        size["embedding_size"] = 16  # factorised embeddings
    if family == "deberta-v2":  # DeBERTa-v3 style: relative positions only
        size.update(relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"])
        size.update(position_buckets=16, max_relative_positions=32)
    ids = {key: getattr(tokenizer, key) for key in ("pad_token_id", "bos_token_id", "eos_token_id")}
    base = tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False) if resize else len(tokenizer)
    kwargs = dict(vocab_size=base, max_position_embeddings=64, num_labels=NUM_LABELS, **ids, **size)
    return AutoConfig.for_model(family, **{**kwargs, **overrides})


def family_model(
    family: str,
    tokenizer,
    head: str = SEQUENCE,
    num_layers: int = 2,
    resize: bool = True,
    perturb: bool = False,
    seed: int = 0,
    **overrides,
):
    """A tiny random `family` model with a `head` (see HEADS) over the tokenizer's vocabulary, in eval mode.

    With `resize`, it is built over the tokenizer's own vocabulary and resized to len(tokenizer), as after add_tokens.
    With `perturb`, every parameter gets noise, so that no LayerNorm or bias is trivially 1 or 0.
    """
    if head == QA:
        overrides = {"num_labels": 2, **overrides}  # start and end: transformers' QA heads need exactly 2
    config = family_config(family, tokenizer, num_layers, resize, **overrides)
    torch.manual_seed(seed)
    model = HEADS[head].from_config(config).eval()
    if resize:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if perturb:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def head_labels(head: str, encoding: dict, special_tokens_mask: list[list[int]]) -> dict[str, list]:
    """Labels a model can learn from for each head, from a padded encoding.

    Sequence: the number of real tokens mod NUM_LABELS. Token: each real, non-special token's id mod NUM_LABELS
    (-100 on special and padding tokens, which carry no loss). QA: a span of the real tokens that depends on the text.
    """
    rows = []
    for ids, mask, special in zip(encoding["input_ids"], encoding["attention_mask"], special_tokens_mask):
        real = [i for i, (m, s) in enumerate(zip(mask, special)) if m and not s]
        rows.append((ids, real))
    if head == EMBEDDING:
        return {}  # learnt from a teacher's embeddings: no labels
    if head == SEQUENCE:
        return {"labels": [len(real) % NUM_LABELS for _, real in rows]}
    if head == TOKEN:
        return {
            "labels": [[ids[i] % NUM_LABELS if i in real else -100 for i in range(len(ids))] for ids, real in rows]
        }
    starts = [real[ids[real[0]] % max(len(real) - 1, 1)] for ids, real in rows]
    ends = [min(s + 2, real[-1]) for s, (_, real) in zip(starts, rows)]
    return {"start_positions": starts, "end_positions": ends}


def task_encoding(tokenizer, head: str, texts: list[str], max_length: int = 24) -> dict[str, list]:
    """The texts tokenized (padded to `max_length`, truncated), with labels for `head`: rows for a Dataset."""
    encoding = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    special = encoding.pop("special_tokens_mask")
    rows = {k: v for k, v in encoding.items()}
    rows.update(head_labels(head, rows, special))
    return rows


def head_outputs(outputs) -> dict[str, torch.Tensor]:
    """The logits a head predicts with: {'logits'} or {'start_logits', 'end_logits'}; a base model's
    {'last_hidden_state'}."""
    if getattr(outputs, "start_logits", None) is not None:
        return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits}
    if getattr(outputs, "logits", None) is None:  # a base model (sentence embeddings): the token states
        return {"last_hidden_state": outputs.last_hidden_state}
    return {"logits": outputs.logits}


if __name__ == "__main__":  # python -m tests.family_models: train the stored tokenizers again
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for key in TRAINED:
        _fixture(*key).write_text(train(*key))
        print(_fixture(*key), file=sys.stderr)
