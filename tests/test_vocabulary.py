"""prune_vocabulary_: every tokenizer kind (trained here) x every family, every tokenizer feature, stock reload."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    BertTokenizerLegacy,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from hf_compress import prune_vocabulary_, quantize_, to_albert
from hf_compress.methods.vocabulary.transform import tokens_to_keep
from tests.family_models import CORPUS, KINDS, roles, trained
from tests.family_models import TOKENIZERS as FAMILIES
from tests.family_models import family_model as tiny_family_model
from tests.testing_utils import VOCAB, run_python, tiny_bert, tiny_tokenizer

SEEN = ["w1 w2 w3 w400", "w7 w2 w900 w901 w5"]


def logits(model, tokenizer, texts):
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def pruned(tmp_path, model=None):
    model = model or tiny_bert()
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    before = logits(model, tokenizer, SEEN)
    new_tokenizer = prune_vocabulary_(model, tokenizer, tokenizer(SEEN)["input_ids"])
    return model, tokenizer, new_tokenizer, before


def test_kept_text_gives_the_same_logits_with_a_smaller_table(tmp_path):
    model, tokenizer, new_tokenizer, before = pruned(tmp_path)
    kept = 5 + len({w for text in SEEN for w in text.split()})  # special tokens + distinct words
    assert model.config.vocab_size == kept == len(new_tokenizer)
    assert model.get_input_embeddings().weight.shape == (kept, 32)
    assert torch.allclose(logits(model, new_tokenizer, SEEN), before, atol=1e-6)
    assert model.config.compression["vocabulary"]["vocab_size"] == {"before": VOCAB, "after": kept}


def test_special_tokens_and_padding_are_renumbered_consistently(tmp_path):
    model, tokenizer, new_tokenizer, _ = pruned(tmp_path)
    enc = new_tokenizer(["w2", "w1 w2 w3"], padding=True)
    assert enc["input_ids"][0][0] == new_tokenizer.cls_token_id
    assert enc["input_ids"][0][-1] == new_tokenizer.pad_token_id == model.config.pad_token_id
    old_rows = tokenizer.convert_tokens_to_ids(["[CLS]", "w400"])
    new_rows = new_tokenizer.convert_tokens_to_ids(["[CLS]", "w400"])
    assert torch.equal(
        model.get_input_embeddings().weight[new_rows], tiny_bert().get_input_embeddings().weight[old_rows]
    )


def test_single_characters_are_kept_so_unseen_words_are_spelled_not_unknown():
    tokenizer = AutoTokenizer.from_pretrained(__import__("hf_compress").minilm_path())
    keep = tokens_to_keep(tokenizer, [tokenizer("good morning")["input_ids"]])
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    assert "a" in {vocab[i] for i in keep} and "##z" in {vocab[i] for i in keep}
    model = tiny_bert(vocab_size=len(tokenizer))
    new_tokenizer = prune_vocabulary_(model, tokenizer, [tokenizer("good morning")["input_ids"]])
    ids = new_tokenizer("good morning zebra")["input_ids"]
    assert new_tokenizer.unk_token_id not in ids
    # [CLS]/[SEP] move from ids 101/102 to small ids: the template that inserts them must follow.
    tokens = new_tokenizer.convert_ids_to_tokens(ids)
    assert (tokens[0], tokens[-1]) == ("[CLS]", "[SEP]") and new_tokenizer.cls_token_id < 101
    assert new_tokenizer.decode(ids, skip_special_tokens=True) == "good morning zebra"


def test_saved_model_and_tokenizer_reload_without_hf_compress(tmp_path):
    model, _, new_tokenizer, before = pruned(tmp_path)
    model.save_pretrained(tmp_path / "out")
    new_tokenizer.save_pretrained(tmp_path / "out")
    result = run_python(
        f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        path = {str(tmp_path / "out")!r}
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        tok = AutoTokenizer.from_pretrained(path)
        with torch.no_grad():
            out = model(**tok({SEEN!r}, padding=True, return_tensors="pt")).logits
        print("LOGITS", out.flatten().tolist())
        print("hf_compress imported:", "hf_compress" in sys.modules)
        """,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.tensor([float(x) for x in result.stdout.split("LOGITS ")[1].split("\n")[0].strip("[]").split(",")])
    assert torch.allclose(got, before.flatten(), atol=1e-5)
    assert "hf_compress imported: False" in result.stdout


def test_albert_models_and_int8_afterwards(tmp_path):
    model = to_albert(tiny_bert(), embedding_size=16).eval()
    model, _, new_tokenizer, before = pruned(tmp_path, model)
    assert torch.allclose(logits(model, new_tokenizer, SEEN), before, atol=1e-6)
    quantize_(model)
    assert model.config.quantization_config.quantized_modules["albert.embeddings.word_embeddings"] == "embedding"


def test_bad_inputs_are_refused(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    ids = tokenizer(SEEN)["input_ids"]
    with pytest.raises(ValueError, match="output vocabulary layer"):
        prune_vocabulary_(
            BertForMaskedLM(
                BertConfig(
                    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
                )
            ),
            tokenizer,
            ids,
        )
    # An int8 model is pruned as well (it used to be refused): its codes and per-row scales are selected, so the
    # result equals quantizing the pruned float model.
    quantized, plain = quantize_(tiny_bert()), tiny_bert()
    prune_vocabulary_(quantized, tokenizer, ids)
    prune_vocabulary_(plain, tokenizer, ids)
    quantize_(plain)
    a, b = quantized.get_input_embeddings(), plain.get_input_embeddings()
    assert torch.equal(a.int8_weight(), b.int8_weight()) and torch.equal(a.weight_scale, b.weight_scale)
    assert quantized.config.vocab_size == a.num_embeddings < VOCAB
    with pytest.raises(ValueError, match="input embedding"):
        bad = tiny_bert()
        bad.set_input_embeddings(torch.nn.Identity())
        prune_vocabulary_(bad, tokenizer, ids)
    with pytest.raises(ValueError, match="same vocabulary"):
        prune_vocabulary_(tiny_bert(vocab_size=VOCAB + 1), tokenizer, ids)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        prune_vocabulary_(tiny_bert(), tokenizer, [[VOCAB + 3]])


# ---------------------------------------------------------------------------------------------------------------------
# Every tokenizer kind x every family. The tokenizers are trained on CORPUS with the `tokenizers` library
# (tests/family_models.py) and used as a user has them: wrapped in the family's class (PreTrainedTokenizerFast for
# another kind), saved, loaded back, then given an added token and an added special token. The models are tiny random
# classifiers of each family.
# ---------------------------------------------------------------------------------------------------------------------

# The task's text: pruning keeps its tokens (and what the kind needs). It uses the added and added special tokens.
TASK = ["The quick brown fox jumps over the lazy dog", "hello world, zorbleflux <ent> is at the Café"]
# Text with pieces the task never used, and characters no tokenizer was trained on (only bytes can spell them).
OTHER = ["quokkas ate the jumping waffles", "naïve café owners (2024)!", "emoji 🦊 and 漢字"]
CASES = [(kind, family) for family in FAMILIES for kind in KINDS]
PAD_LAST = ("roberta", "xlm-roberta", "bert")  # RoBERTa-style position ids start after the pad id; BERT's do not
UNIGRAM_VARIANTS = {"byte-fallback": dict(byte_fallback=True), "unk-last": dict(unk_last=True)}


def users_tokenizer(kind: str, family: str, directory, without: str | None = None, layout: str | None = None):
    """The family's tokenizer class over a trained `kind` tokenizer, saved and loaded back, plus added tokens."""
    natural_kind, tokenizer_class, family_layout = FAMILIES[family]
    layout = layout or family_layout
    tokenizer_class = tokenizer_class if kind == natural_kind else PreTrainedTokenizerFast
    backend = Tokenizer.from_str(trained(kind, layout, without))
    tokenizer_class(tokenizer_object=backend, **roles(layout)).save_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side, tokenizer.truncation_side, tokenizer.model_max_length = "left", "left", 48
    tokenizer.add_tokens(["zorbleflux", "frobnicator"])  # the task uses the first only
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    return tokenizer


def task_logits(model, tokenizer, texts=TASK) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def pieces(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


@dataclass
class Pruned:
    tokenizer: object  # the user's, as it was
    new_tokenizer: object
    model: torch.nn.Module  # pruned in place
    rows: dict  # token -> its embedding row before
    config_tokens: dict  # config *_token_id -> the token it named before
    logits: torch.Tensor  # on TASK, before
    directory: str  # the pruned model and tokenizer, saved
    new_spec: dict  # the new tokenizer's tokenizer.json as prune_vocabulary_ returned it


def prune_and_save(model, tokenizer, directory) -> Pruned:
    weight = model.get_input_embeddings().weight.detach().clone()
    rows = {token: weight[i] for token, i in tokenizer.get_vocab().items()}
    config_tokens = {
        key: tokenizer.convert_ids_to_tokens(getattr(model.config, key))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id")
        if getattr(model.config, key, None) is not None
    }
    token_ids = tokenizer(TASK)["input_ids"]
    before = task_logits(model, tokenizer)  # padding=True: the backend keeps padding on, with the old pad id
    assert spec(tokenizer)["padding"]["pad_id"] == tokenizer.pad_token_id
    new_tokenizer = prune_vocabulary_(model, tokenizer, token_ids)
    model.save_pretrained(directory)
    new_tokenizer.save_pretrained(directory)
    return Pruned(tokenizer, new_tokenizer, model, rows, config_tokens, before, str(directory), spec(new_tokenizer))


def unigram_variant(directory, byte_fallback: bool = False, unk_last: bool = False):
    """The XLM-R style Unigram tokenizer with byte_fallback (256 <0xNN> pieces after its vocabulary) and/or its unk
    piece moved to the end of the vocabulary (so that pruning moves it)."""
    backend = Tokenizer.from_str(trained("Unigram", "roberta"))
    vocab, unk_id = json.loads(backend.to_str())["model"]["vocab"], json.loads(backend.to_str())["model"]["unk_id"]
    unk = tuple(vocab.pop(unk_id)) if unk_last else None
    vocab = [tuple(p) for p in vocab] + ([(f"<0x{b:02X}>", -30.0) for b in range(256)] if byte_fallback else [])
    if unk_last:
        vocab, unk_id = vocab + [unk], len(vocab)
    backend.model = models.Unigram(vocab, unk_id=unk_id, byte_fallback=byte_fallback)
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    PreTrainedTokenizerFast(tokenizer_object=backend, **roles("roberta")).save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def custom_normalizer_bert():
    """A BertTokenizer built in memory around a normalizer its class cannot rebuild from its arguments (& -> and)."""
    backend = Tokenizer.from_str(trained("WordPiece", "bert"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace("&", " and "), normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    return BertTokenizer(tokenizer_object=backend, **roles("bert"))


@pytest.fixture(scope="module")
def pruned_cases(tmp_path_factory) -> dict[str, Pruned]:
    """Every case pruned once and saved: the tests below check them in this process and in a fresh one."""
    root = tmp_path_factory.mktemp("vocabulary")
    cases = {}
    for kind, family in CASES:
        tokenizer = users_tokenizer(kind, family, root / f"user-{family}-{kind}")
        cases[f"{kind}/{family}"] = prune_and_save(
            tiny_family_model(family, tokenizer), tokenizer, root / f"{kind}-{family}"
        )
    for family in PAD_LAST:  # GPT-2 style: no pad in the trained vocabulary, "<pad>" added after it by the class
        tokenizer = users_tokenizer("byte-level BPE", family, root / f"user-pad-{family}", "<pad>", "roberta")
        model = tiny_family_model(family, tokenizer, resize=False, max_position_embeddings=len(tokenizer) + 64)
        cases[f"pad-last/{family}"] = prune_and_save(model, tokenizer, root / f"pad-last-{family}")
    for name, variant in UNIGRAM_VARIANTS.items():
        tokenizer = unigram_variant(root / f"user-{name}", **variant)
        cases[name] = prune_and_save(tiny_family_model("xlm-roberta", tokenizer), tokenizer, root / name)
    tokenizer = custom_normalizer_bert()
    cases["custom-normalizer"] = prune_and_save(
        tiny_family_model("bert", tokenizer), tokenizer, root / "custom-normalizer"
    )
    return cases


def check_wordpiece(old: dict, new: dict) -> None:
    """Every single character and its '##' continuation stays, so words stay spellable."""
    singles = {t for t in old["model"]["vocab"] if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    assert singles and singles <= new["model"]["vocab"].keys()


def check_byte_level_bpe(old: dict, new: dict) -> None:
    """The 256 byte-level pieces stay; merges stay iff both parts and the result do, in their old order; no kept
    token is unreachable (each is a base piece, an added token, or the result of a kept merge)."""
    vocab, merges = new["model"]["vocab"], [tuple(m) for m in new["model"]["merges"]]
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= vocab.keys() and len(pre_tokenizers.ByteLevel.alphabet()) == 256
    old_merges = [tuple(m) for m in old["model"]["merges"]]
    assert merges == [(a, b) for a, b in old_merges if a in vocab and b in vocab and a + b in vocab]
    assert len(merges) < len(old_merges)
    produced, added = {a + b for a, b in merges}, {t["content"] for t in new["added_tokens"]}
    unreachable = [t for t in vocab if t not in produced and t not in added and len(t) > 1]
    assert not unreachable


def check_unigram(old: dict, new: dict) -> None:
    """Pieces keep their scores; single characters, unk (renumbered) and byte pieces (with byte_fallback) stay."""
    old_scores, new_pieces = dict(map(tuple, old["model"]["vocab"])), [tuple(p) for p in new["model"]["vocab"]]
    assert all(old_scores[piece] == score for piece, score in new_pieces)
    assert {p for p in old_scores if len(p) == 1} <= {p for p, _ in new_pieces}
    assert new_pieces[new["model"]["unk_id"]][0] == old["model"]["vocab"][old["model"]["unk_id"]][0]
    if old["model"]["byte_fallback"]:
        assert {f"<0x{b:02X}>" for b in range(256)} <= {p for p, _ in new_pieces}


CHECK_KIND = {"WordPiece": check_wordpiece, "byte-level BPE": check_byte_level_bpe, "Unigram": check_unigram}


@pytest.mark.parametrize("kind, family", CASES)
def test_every_kind_and_family_keeps_tokens_logits_and_tokenizer_features(pruned_cases, kind, family):
    case = pruned_cases[f"{kind}/{family}"]
    old, new, model = case.tokenizer, case.new_tokenizer, case.model
    rows = model.get_input_embeddings().weight
    assert len(new) == rows.shape[0] == model.config.vocab_size < len(old)
    # Text made of kept tokens: the same token strings and the same logits.
    assert [pieces(new, text) for text in TASK] == [pieces(old, text) for text in TASK]
    assert torch.allclose(task_logits(model, new), case.logits, atol=1e-5)
    # Every kept token keeps its own row; the config's token ids name the same tokens as before.
    assert all(torch.equal(rows[i], case.rows[token]) for token, i in new.get_vocab().items())
    assert {
        key: new.convert_ids_to_tokens(getattr(model.config, key)) for key in case.config_tokens
    } == case.config_tokens
    assert model.config.pad_token_id == new.pad_token_id == model.get_input_embeddings().padding_idx
    # The added token and the added special token: same string <-> a new id, matched whole, still (not) special.
    for token in ("zorbleflux", "frobnicator", "<ent>"):
        new_id = new.convert_tokens_to_ids(token)
        assert (
            new.convert_ids_to_tokens(new_id) == token
            and new_id < len(new)
            and pieces(new, f"a {token} b").count(token) == 1
        )
    assert "<ent>" in new.all_special_tokens and "zorbleflux" not in new.all_special_tokens
    # Text with dropped pieces is spelled with kept ones: no more unknowns than before (byte-level: never unknown).
    assert any(piece not in new.get_vocab() for text in OTHER for piece in pieces(old, text))
    for text in OTHER:
        old_ids, new_ids = old(text)["input_ids"], new(text)["input_ids"]
        assert new_ids.count(new.unk_token_id) == old_ids.count(old.unk_token_id)
        assert new.decode(new_ids, skip_special_tokens=True) == old.decode(old_ids, skip_special_tokens=True)
        if kind == "byte-level BPE":
            assert new.unk_token_id not in new_ids and new.decode(new_ids, skip_special_tokens=True) == text
    # Normalizer, pre-tokenizer, decoder and the tokenizer's settings survive; the class too when it can rebuild it.
    old_spec, new_spec = spec(old), spec(new)
    assert [new_spec[k] for k in ("normalizer", "pre_tokenizer", "decoder")] == [
        old_spec[k] for k in ("normalizer", "pre_tokenizer", "decoder")
    ]
    assert (new.padding_side, new.truncation_side, new.model_max_length) == ("left", "left", 48)
    assert new.name_or_path == old.name_or_path  # not the temporary folder it was rebuilt in
    assert type(new) is (type(old) if FAMILIES[family][0] == kind else TokenizersBackend)
    CHECK_KIND[kind](old_spec, new_spec)
    assert model.config.compression["vocabulary"] == {
        "tokenizer": kind,
        "vocab_size": {"before": len(old), "after": len(new)},
    }


@pytest.mark.parametrize("family", PAD_LAST)
def test_a_pad_added_after_the_vocabulary_moves_and_positions_follow(pruned_cases, family):
    case = pruned_cases[f"pad-last/{family}"]
    old, new, model = case.tokenizer, case.new_tokenizer, case.model
    assert old.pad_token_id == len(old) - 4 and new.pad_token_id < old.pad_token_id  # then the added tokens
    assert model.config.pad_token_id == new.pad_token_id == model.get_input_embeddings().padding_idx
    assert case.new_spec["padding"]["pad_id"] == new.pad_token_id  # tokenizer.json's padding settings follow too
    embeddings = model.base_model.embeddings
    if family != "bert":  # position ids are pad_token_id + 1, 2, ...: the table moved with the pad id
        assert embeddings.padding_idx == embeddings.position_embeddings.padding_idx == new.pad_token_id
    enc = new(TASK, padding=True)
    assert new.pad_token_id in enc["input_ids"][0] + enc["input_ids"][1]  # a padded batch
    assert [pieces(new, text) for text in TASK] == [pieces(old, text) for text in TASK]
    assert torch.allclose(task_logits(model, new), case.logits, atol=1e-5)


@pytest.mark.parametrize("name", UNIGRAM_VARIANTS)
def test_unigram_byte_fallback_pieces_and_the_unk_piece_are_kept_and_renumbered(pruned_cases, name):
    case = pruned_cases[name]
    old, new = case.tokenizer, case.new_tokenizer
    check_unigram(spec(old), case.new_spec)
    assert len(new) < len(old) and case.new_spec["model"]["unk_id"] == new.unk_token_id
    assert (new.unk_token_id < old.unk_token_id) == (name == "unk-last")
    assert [pieces(new, text) for text in TASK] == [pieces(old, text) for text in TASK]
    assert torch.allclose(task_logits(case.model, new), case.logits, atol=1e-5)
    for text in OTHER:
        old_ids, new_ids = old(text)["input_ids"], new(text)["input_ids"]
        assert new_ids.count(new.unk_token_id) == old_ids.count(old.unk_token_id)
        assert new.decode(new_ids, skip_special_tokens=True) == old.decode(old_ids, skip_special_tokens=True)
    if name == "byte-fallback":  # characters no piece spells are bytes, never unknown
        assert all(new.unk_token_id not in new(text)["input_ids"] for text in OTHER) and "<0xF0>" in pieces(new, "🦊")
    else:
        assert "<unk>" in pieces(new, "emoji 🦊")


def test_a_tokenizer_its_class_cannot_rebuild_comes_back_generic_with_the_same_behaviour(pruned_cases):
    case = pruned_cases["custom-normalizer"]
    old, new = case.tokenizer, case.new_tokenizer
    assert type(old) is BertTokenizer and type(new) is TokenizersBackend  # BertTokenizer would rebuild BertNormalizer
    assert spec(new)["normalizer"] == spec(old)["normalizer"]
    for tokenizer in (old, new):  # '&' becomes 'and' before the (pruned) vocabulary spells the words
        assert tokenizer.decode(tokenizer("Salt & Pepper")["input_ids"], skip_special_tokens=True) == "salt and pepper"
    assert [pieces(new, text) for text in TASK] == [pieces(old, text) for text in TASK]
    assert torch.allclose(task_logits(case.model, new), case.logits, atol=1e-5)


def test_every_pruned_checkpoint_reloads_in_a_fresh_process_without_hf_compress(pruned_cases, tmp_path):
    directories = {name: case.directory for name, case in pruned_cases.items()}
    texts = TASK + OTHER + ["Salt & Pepper"]
    result = run_python(
        f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        out = {{}}
        for name, path in {directories!r}.items():
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path).eval()
            enc = tok({TASK!r}, padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            ids = [tok(text)["input_ids"] for text in {texts!r}]
            settings = [tok.padding_side, tok.truncation_side, tok.model_max_length]
            out[name] = {{"ids": ids, "logits": logits.tolist(), "class": type(tok).__name__, "len": len(tok)}}
            out[name]["settings"] = settings
        print("RESULT", json.dumps(out))
        print("hf_compress imported:", "hf_compress" in sys.modules)
        """,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hf_compress imported: False" in result.stdout
    out = json.loads(result.stdout.split("RESULT ")[1].split("\n")[0])
    for name, case in pruned_cases.items():
        assert out[name]["ids"] == [case.new_tokenizer(text)["input_ids"] for text in texts], name
        assert torch.allclose(torch.tensor(out[name]["logits"]), case.logits, atol=1e-5), name
        assert (out[name]["class"], out[name]["len"]) == (type(case.new_tokenizer).__name__, len(case.new_tokenizer))
        new = case.new_tokenizer
        assert out[name]["settings"] == [new.padding_side, new.truncation_side, new.model_max_length], name
        for file in os.listdir(case.directory):  # no machine paths (e.g. the folder it was pruned in) saved
            if file.endswith(".json"):
                with open(os.path.join(case.directory, file), encoding="utf-8") as f:
                    assert "/tmp" not in f.read() and str(tmp_path.parent.parent) not in f.read(), (name, file)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "model_built_in_inference_mode"])
def test_no_grad_inference_mode_and_inference_tensors(tmp_path, mode):
    # The pad moves here, so the RoBERTa position table is rebuilt as well as the word embeddings.
    tokenizer = users_tokenizer("byte-level BPE", "roberta", tmp_path / "tok", without="<pad>")
    ids = tokenizer(TASK)["input_ids"]
    build = dict(resize=False, max_position_embeddings=len(tokenizer) + 64)
    if mode == "model_built_in_inference_mode":
        with torch.inference_mode():
            model = tiny_family_model("roberta", tokenizer, **build)
            before = task_logits(model, tokenizer)
        assert model.get_input_embeddings().weight.is_inference()
        new = prune_vocabulary_(model, tokenizer, ids)  # outside inference mode: no in-place edit of its tensors
        with torch.inference_mode():
            assert torch.allclose(task_logits(model, new), before, atol=1e-5)
        return
    model = tiny_family_model("roberta", tokenizer, **build)
    before = task_logits(model, tokenizer)
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        new = prune_vocabulary_(model, tokenizer, ids)
    assert torch.allclose(task_logits(model, new), before, atol=1e-5)
    # The new tables are ordinary trainable tensors, even when made under inference_mode: the model still trains.
    tables = [model.get_input_embeddings().weight, model.roberta.embeddings.position_embeddings.weight]
    assert all(not t.is_inference() and t.requires_grad for t in tables)
    enc = new(TASK, padding=True, return_tensors="pt")
    model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=torch.tensor([0, 1])
    ).loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables)


def test_config_token_ids_are_kept_and_renumbered_even_when_the_task_never_uses_them(tmp_path):
    tokenizer = users_tokenizer("byte-level BPE", "roberta", tmp_path / "tok")
    task_ids = tokenizer(TASK)["input_ids"]
    unused = max(set(tokenizer.get_vocab().values()) - set(tokens_to_keep(tokenizer, task_ids)))
    model = tiny_family_model("roberta", tokenizer, eos_token_id=unused, sep_token_id=[unused, tokenizer.sep_token_id])
    new = prune_vocabulary_(model, tokenizer, task_ids)
    assert new.convert_ids_to_tokens(model.config.eos_token_id) == tokenizer.convert_ids_to_tokens(unused)
    assert new.convert_ids_to_tokens(model.config.sep_token_id) == [tokenizer.convert_ids_to_tokens(unused), "</s>"]


def test_other_tokenizer_kinds_and_models_are_refused_by_name_before_any_change(tmp_path):
    whitespace = pre_tokenizers.Whitespace()
    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    word_level.pre_tokenizer = whitespace
    char_bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    char_bpe.pre_tokenizer = whitespace
    char_bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]"]))
    tiny_tokenizer(tmp_path / "slow")  # writes vocab.txt
    slow = BertTokenizerLegacy(vocab_file=str(tmp_path / "slow" / "vocab.txt"))
    refused = [
        (PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]"), r"tokenizer kind='WordLevel'"),
        (
            PreTrainedTokenizerFast(tokenizer_object=char_bpe),
            r"tokenizer kind='BPE without a ByteLevel pre-tokenizer'",
        ),
        (slow, r"tokenizer kind='slow BertTokenizerLegacy'"),
    ]
    for tokenizer, message in refused:
        model = tiny_bert(vocab_size=len(tokenizer))
        with pytest.raises(
            ValueError, match=message + r" is invalid; allowed: .*WordPiece, byte-level BPE .* Unigram"
        ):
            prune_vocabulary_(model, tokenizer, [[0, 1]])
        assert model.get_input_embeddings().num_embeddings == model.config.vocab_size == len(tokenizer)
    tokenizer = users_tokenizer("byte-level BPE", "roberta", tmp_path / "tok")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ValueError, match="output vocabulary layer"):
        prune_vocabulary_(RobertaForMaskedLM(config), tokenizer, tokenizer(TASK)["input_ids"])
    model = tiny_family_model("roberta", tokenizer, eos_token_id=len(tokenizer))
    with pytest.raises(ValueError, match=r"config.eos_token_id=\d+ is invalid; allowed: ids in \[0, \d+\)"):
        prune_vocabulary_(model, tokenizer, tokenizer(TASK)["input_ids"])
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
