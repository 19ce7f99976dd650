"""hf_compress.format.compressed_tensors and `export --format compressed-tensors`: every int8 and low-bit artifact as a
checkpoint that stock transformers loads, in a process that never imports hf_compress, computing what ours computes.

One matrix over quantized kind (plain int8 with either activation range, calibrated int8, int8 low-rank, low-bit at
8/4/2/1 bits per row and 4 bits per group, embeddings included) with the sequence head, plus the token and span heads
for int8. Each export is checked here independently of the export's own check: one fresh interpreter, in which
`import hf_compress` fails, loads every exported folder with `from_pretrained` and runs new inputs; the stored codes
are read back from the safetensors file and compared with our modules' codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import BertForSequenceClassification

import hf_compress
from hf_compress.cli.main import main
from hf_compress.export import export, export_compressed_tensors, verify
from hf_compress.format.config import Int8QuantizationConfig
from hf_compress.loading import load_saved_model
from hf_compress.methods.int8.modules import Int8Embedding, Int8Linear
from hf_compress.methods.low_bit.modules import LowBitEmbedding, LowBitLinear
from tests.testing_utils import HEADS, OUTPUTS, VOCAB, run_python, tiny_bert_config, tiny_tokenizer


def _batches(n: int = 2):
    generator = torch.Generator().manual_seed(1)
    ids = [torch.randint(5, VOCAB, (4, 12), generator=generator) for _ in range(n)]
    return [{"input_ids": i, "attention_mask": torch.ones_like(i)} for i in ids]


def _calibrated(model):
    batches = _batches()
    calibration = hf_compress.smooth_activations_(model, batches)
    calibration |= hf_compress.keep_outlier_channels_(model, batches, num_channels=2)
    calibration |= hf_compress.calibrate_gptq_(model, batches)
    return hf_compress.quantize_(model, Int8QuantizationConfig(activation_range="per_token"), calibration=calibration)


def _low_bit(bits, group_size=None, modules="encoder"):
    return lambda model: hf_compress.bake_low_bit_(hf_compress.fake_quantize_(model, bits, group_size, modules))


# kind -> (transform of a tiny float BERT with a head, whether every module keeps our exact codes)
KINDS = {
    "int8": (hf_compress.quantize_, True),
    "int8-per-token": (lambda m: hf_compress.quantize_(m, Int8QuantizationConfig(activation_range="per_token")), True),
    "int8-calibrated": (_calibrated, False),
    "int8-low-rank": (lambda m: hf_compress.quantize_(hf_compress.factorize_linear_(m, rank_ratio=0.5)), False),
    "low-bit-8": (_low_bit(8), True),
    "low-bit-4-all": (_low_bit(4, modules="all"), True),
    "low-bit-4-group": (_low_bit(4, group_size=16, modules="encoder_embeddings"), True),
    "ternary": (_low_bit(2, modules="encoder_embeddings"), True),
    "binary": (_low_bit(1, group_size=16, modules="encoder_embeddings"), True),
}
CASES = [(kind, "text-classification") for kind in KINDS]
CASES += [("int8", "token-classification"), ("int8", "question-answering")]


class Exports:
    """Each artifact and its compressed-tensors export, made once per session when a test first asks for it."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple[str, str], tuple[Path, Path, dict]] = {}

    def source(self, kind: str, task: str) -> Path:
        directory = self.root / f"{kind}-{task}"
        if not directory.exists():
            torch.manual_seed(0)
            labels = 2 if task == "question-answering" else 3
            model = HEADS[task](tiny_bert_config(initializer_range=0.2, num_labels=labels)).eval()
            KINDS[kind][0](model)
            model.save_pretrained(directory)
            tiny_tokenizer(self.root / "vocab").save_pretrained(directory)
        return directory

    def get(self, kind: str, task: str) -> tuple[Path, Path, dict]:
        if (kind, task) not in self.done:
            source = self.source(kind, task)
            out = self.root / f"{kind}-{task}-ct"
            self.done[(kind, task)] = (source, out, export_compressed_tensors(source, out))
        return self.done[(kind, task)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("compressed-tensors"))


# A fresh interpreter that cannot import hf_compress loads every folder with stock transformers and runs new inputs.
STOCK = """
import json, sys
sys.modules["hf_compress"] = None
import numpy as np, torch, transformers
cases = json.loads(sys.argv[1])
for case in cases:
    model = getattr(transformers, case["architecture"]).from_pretrained(case["directory"]).eval()
    ids = torch.tensor(case["input_ids"])
    mask = torch.tensor(case["attention_mask"])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    config = json.load(open(case["directory"] + "/config.json"))
    assert config["quantization_config"]["quant_method"] == "compressed-tensors", config["quantization_config"]
    np.savez(case["result"], **{name: out[name].numpy() for name in case["outputs"]})
print("hf_compress" in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None])
"""


@pytest.fixture(scope="module")
def stock_outputs(exports, tmp_path_factory):
    """{(kind, task): outputs of stock transformers on new inputs}, all computed in one fresh interpreter."""
    work = tmp_path_factory.mktemp("stock")
    rng = np.random.default_rng(7)
    ids = rng.integers(5, VOCAB, (5, 17))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # padding, which the export's sample did not have at this length
    ids[1, 9:] = 0
    cases = []
    for kind, task in CASES:
        _, out, record = exports.get(kind, task)
        result = work / f"{kind}-{task}.npz"
        cases.append(
            {
                "directory": str(out),
                "architecture": record["architecture"],
                "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(),
                "outputs": list(OUTPUTS[task]),
                "result": str(result),
            }
        )
    done = run_python(STOCK.replace("sys.argv[1]", repr(json.dumps(cases))), cwd=str(work))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False", "the stock process imported hf_compress"
    return {(kind, task): dict(np.load(work / f"{kind}-{task}.npz")) for kind, task in CASES}, ids, mask


@pytest.mark.parametrize(("kind", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_stock_transformers_computes_what_hf_compress_computes(exports, stock_outputs, kind, task):
    source, out, record = exports.get(kind, task)
    got_all, ids, mask = stock_outputs
    got = got_all[(kind, task)]
    model = load_saved_model(str(source))
    with torch.inference_mode():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    reference = [{name: want[name].float().numpy() for name in OUTPUTS[task]}]
    stats = verify.compare(reference, [got], [{"input_ids": ids, "attention_mask": mask}], task)
    ok, bound = verify.within_bound(stats, int8=True)
    assert ok, f"{verify.measured(stats)}; bound {bound}"
    # The export's own check ran stock transformers too, and recorded it.
    assert "without hf_compress" in record["check"]["runtime"]
    assert record["format"] == "compressed-tensors"
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["export"]["quantization"] == record["quantization"]
    # Activations rounded at run time are described as ours are rounded: a zero point per range (asymmetric).
    inputs = [g["input_activations"] for g in config["quantization_config"]["config_groups"].values()]
    assert all(i is None or (i["dynamic"] and not i["symmetric"]) for i in inputs)
    assert (out / "tokenizer.json").exists() and (out / "README.md").exists()
    assert "compressed-tensors" in (out / "README.md").read_text()


@pytest.mark.parametrize("kind", list(KINDS))
def test_stored_codes_are_ours(exports, kind):
    """Plain int8 and every low-bit module keep their exact codes and scales; the others are re-quantized, named."""
    source, out, record = exports.get(kind, "text-classification")
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    model = load_saved_model(str(source))
    exact = KINDS[kind][1]
    ours = (Int8Linear, Int8Embedding, LowBitLinear, LowBitEmbedding)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, ours)}
    stored = record["quantization"]
    assert stored["modules"] >= len(quantized) > 0
    assert (stored["exact_codes"] == stored["modules"]) == exact
    assert bool(stored["requantized"]) == (not exact)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for name, module in quantized.items():
            if name in stored["requantized"]:
                continue
            if isinstance(module, (Int8Linear, Int8Embedding)):
                codes, scale = module.int8_weight(), module.weight_scale
                assert torch.equal(f.get_tensor(f"{name}.weight"), codes), name
            elif isinstance(module, LowBitLinear):
                scale = module.weight_scale.view(module.out_features, -1)
                packed = f.get_tensor(f"{name}.weight_packed")
                shape = torch.Size(f.get_tensor(f"{name}.weight_shape").tolist())
                assert torch.equal(unpack_from_int32(packed, max(module.bits, 2), shape), module.codes()), name
            else:  # LowBitEmbedding: int8 storage of its low-bit codes
                scale = module.weight_scale.view(module.num_embeddings, -1)
                codes = f.get_tensor(f"{name}.weight")
                per_column = scale.repeat_interleave(module.embedding_dim // scale.shape[1], dim=1)
                assert torch.equal(codes.float() * per_column, module.dequantized_weight()), name
                assert codes.abs().max() <= 2 ** (max(module.bits, 2) - 1), name
            assert torch.equal(f.get_tensor(f"{name}.weight_scale").reshape(scale.shape).float(), scale.float()), name
        assert not any("hf_compress" in key for key in keys)


def test_requantized_modules_are_named_with_why(exports):
    _, _, record = exports.get("int8-calibrated", "text-classification")
    reasons = set(record["quantization"]["requantized"].values())
    assert any("SmoothQuant" in r for r in reasons) and any("outlier" in r for r in reasons)
    _, _, record = exports.get("int8-low-rank", "text-classification")
    assert all("low-rank" in r for r in record["quantization"]["requantized"].values())


def test_the_cli_exports_and_prints_the_check(exports, tmp_path, capsys):
    source = exports.source("low-bit-8", "text-classification")
    assert main(["export", str(source), str(tmp_path / "out"), "--format", "compressed-tensors"]) == 0
    printed = capsys.readouterr().out
    assert "compressed-tensors" in printed and "without hf_compress" in printed and "opset" not in printed


def test_a_float_model_is_refused_and_nothing_is_written(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=3))
    model.save_pretrained(tmp_path / "float")
    tiny_tokenizer(tmp_path / "float").save_pretrained(tmp_path / "float")
    with pytest.raises(ValueError, match="is invalid; allowed: a model with int8 or low-bit modules"):
        export(tmp_path / "float", tmp_path / "out", format="compressed-tensors")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_opset_is_refused_for_a_checkpoint(exports, tmp_path):
    source = exports.source("int8", "text-classification")
    with pytest.raises(ValueError, match="opset=18 is invalid; allowed: null with format='compressed-tensors'"):
        export(source, tmp_path / "out", format="compressed-tensors", opset=18)


@pytest.mark.parametrize("kind", list(KINDS))
def test_with_hf_compress_imported_our_kernels_load(exports, kind, tmp_path):
    """from_pretrained of our compressed-tensors export, hf_compress imported: our modules, and the source model's
    outputs exactly where the codes are ours; save_pretrained then writes hf_compress's format, which reloads equal."""
    source, out, _ = exports.get(kind, "text-classification")
    model = BertForSequenceClassification.from_pretrained(out).eval()
    ours = (Int8Linear, LowBitLinear)
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, ours)
    assert model.config.quantization_config.quant_method == "hf_compress_int8"
    reference = load_saved_model(str(source))
    ids = torch.randint(5, VOCAB, (3, 11), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got, want = model(input_ids=ids).logits, reference(input_ids=ids).logits
    if KINDS[kind][1]:
        assert torch.equal(got, want)
    else:
        batch = {"input_ids": ids.numpy(), "attention_mask": np.ones(tuple(ids.shape), dtype=np.int64)}
        stats = verify.compare([{"logits": want.numpy()}], [{"logits": got.numpy()}], [batch], "text-classification")
        assert verify.within_bound(stats, int8=True)[0], verify.measured(stats)
    model.save_pretrained(tmp_path / "resaved")
    again = load_saved_model(str(tmp_path / "resaved"))
    with torch.inference_mode():
        assert torch.equal(again(input_ids=ids).logits, got)


def test_other_compressed_tensors_checkpoints_load_as_stock(exports, tmp_path):
    """A compressed-tensors checkpoint hf-compress did not write keeps transformers' own loading."""
    import shutil

    _, out, _ = exports.get("int8", "text-classification")
    theirs = tmp_path / "theirs"
    shutil.copytree(out, theirs)
    config = json.loads((theirs / "config.json").read_text())
    del config["export"]
    (theirs / "config.json").write_text(json.dumps(config))
    model = BertForSequenceClassification.from_pretrained(theirs).eval()
    assert type(model.bert.encoder.layer[0].intermediate.dense) is torch.nn.Linear
    assert model.config.quantization_config.quant_method == "compressed-tensors"
