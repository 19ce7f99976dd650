import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from hf_compress import prune_vocabulary_, quantize_, to_albert
from hf_compress.transforms.vocabulary import tokens_to_keep
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
    with pytest.raises(ValueError, match="before quantizing"):
        prune_vocabulary_(quantize_(tiny_bert()), tokenizer, ids)
    with pytest.raises(ValueError, match="same vocabulary"):
        prune_vocabulary_(tiny_bert(vocab_size=VOCAB + 1), tokenizer, ids)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        prune_vocabulary_(tiny_bert(), tokenizer, [[VOCAB + 3]])
