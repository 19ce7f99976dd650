import pytest
import torch

from hf_compress import create_student
from hf_compress.methods.student.transform import uniform_layers
from tests.testing_utils import tiny_batch, tiny_bert


def test_uniform_layers_takes_every_other_from_the_bottom():
    assert uniform_layers(6, 3) == [0, 2, 4]
    assert uniform_layers(6, 1) == [0]
    assert uniform_layers(4, 4) == [0, 1, 2, 3]


def test_student_copies_chosen_layers_embeddings_and_head():
    teacher = tiny_bert(num_hidden_layers=4)
    student = create_student(teacher, layers=[1, 3])
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2
    for s_id, t_id in enumerate([1, 3]):
        for (name, p_s), (_, p_t) in zip(
            student.bert.encoder.layer[s_id].named_parameters(), teacher.bert.encoder.layer[t_id].named_parameters()
        ):
            assert torch.equal(p_s, p_t), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert student.config.compression["student"]["layers"] == [1, 3]


def test_full_depth_student_is_the_teacher():
    teacher = tiny_bert()
    student = create_student(teacher, num_hidden_layers=2).eval()
    batch = tiny_batch()
    batch.pop("labels")
    assert torch.allclose(student(**batch).logits, teacher(**batch).logits, atol=1e-6)


def test_student_of_a_tied_model_keeps_its_weights_tied_and_untouched_by_random_init():
    """The student is built without random init (every tensor comes from the teacher), so the tying that init
    would have done must still hold: a masked-LM decoder is the word embedding, one tensor."""
    from transformers import BertForMaskedLM

    from tests.testing_utils import tiny_bert_config

    torch.manual_seed(0)
    teacher = BertForMaskedLM(tiny_bert_config(num_hidden_layers=3, tie_word_embeddings=True)).eval()
    student = create_student(teacher, layers=[0, 2])
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert all(torch.isfinite(p).all() for p in student.parameters())
    state = teacher.state_dict()
    for name, tensor in student.state_dict().items():  # every tensor the teacher's (layers renumbered)
        source = name.replace("layer.1.", "layer.2.")
        assert torch.equal(tensor, state[source]), name


def test_student_saves_and_reloads_as_stock_model(tmp_path):
    from transformers import AutoModelForSequenceClassification

    student = create_student(tiny_bert(num_hidden_layers=4), num_hidden_layers=2)
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == 2
    assert reloaded.config.compression["student"]["layers"] == [0, 2]


@pytest.mark.parametrize("kwargs", [{}, {"num_hidden_layers": 0}, {"num_hidden_layers": 5}, {"layers": [0, 9]}])
def test_bad_student_requests_raise(kwargs):
    with pytest.raises(ValueError):
        create_student(tiny_bert(num_hidden_layers=4), **kwargs)
