"""Knowledge distillation: the loss and its gradient, Model.backward_logits, and fine-tuning with a teacher."""
import numpy as np
import pytest

from perforated.train import sgd as tr
from perforated.data import Split, batches
from perforated.train.distill import distillation_loss
from perforated.graph.model import Model


def test_gradient_matches_finite_differences(rng):
    z, t = rng.standard_normal((3, 5)) * 2, rng.standard_normal((3, 5)) * 2
    labels = np.array([0, 4, 2])
    _, grad = distillation_loss(z, t, labels, weight=0.6, temperature=3.0)
    eps = 1e-4
    for i in range(3):
        for j in range(5):
            up, down = z.copy(), z.copy()
            up[i, j] += eps
            down[i, j] -= eps
            numeric = (distillation_loss(up, t, labels, 0.6, 3.0)[0].astype(np.float64).mean()
                       - distillation_loss(down, t, labels, 0.6, 3.0)[0].astype(np.float64).mean()) / (2 * eps)
            assert grad[i, j] == pytest.approx(numeric, abs=2e-3)


def test_soft_targets_alone_vanish_when_the_student_is_the_teacher(rng):
    z = rng.standard_normal((4, 10)).astype(np.float32)
    loss, grad = distillation_loss(z, z, np.zeros(4, int), weight=1.0, temperature=4.0)
    np.testing.assert_allclose(loss, 0, atol=1e-6)
    np.testing.assert_allclose(grad, 0, atol=1e-7)
    loss, _ = distillation_loss(z, z + 1.0, np.zeros(4, int), weight=1.0, temperature=4.0)  # a shift: same softmax
    np.testing.assert_allclose(loss, 0, atol=1e-5)


def test_bad_arguments_are_named(rng):
    z = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"weight .* must be in \(0, 1\], got 0"):
        distillation_loss(z, z, np.zeros(2, int), weight=0.0, temperature=1.0)
    with pytest.raises(ValueError, match="distill_temperature must be a finite number > 0, got -1"):
        distillation_loss(z, z, np.zeros(2, int), weight=0.5, temperature=-1.0)
    with pytest.raises(ValueError, match="same batch x classes shape"):
        distillation_loss(z, z[:1], np.zeros(2, int), weight=0.5, temperature=1.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        distillation_loss(z, z, np.zeros(3, int), weight=0.5, temperature=1.0)
    with pytest.raises(ValueError, match="distill_weight .* must be in"):
        tr.TrainConfig(teacher="t.npz", distill_weight=2.0).check()


def test_backward_logits_with_the_cross_entropy_gradient_equals_backward(rng):
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = np.array([3, 7])
    a, b = Model("nin", 2, seed=1), Model("nin", 2, seed=1)
    for m in (a, b):
        m.forward(x)
    _, prob = a.loss(labels)
    a.backward(labels)
    dlogits = prob.copy()
    dlogits[np.arange(2), labels] -= 1
    b.backward_logits(dlogits / 2)
    for name in a.params:
        for key in a.params.grads[name]:
            np.testing.assert_allclose(a.params.grads[name][key], b.params.grads[name][key], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"dlogits must be an array of shape \(2, 10\), got \(2, 3\)"):
        b.backward_logits(np.zeros((2, 3), np.float32))


def test_finetuning_with_a_teacher_moves_the_student_towards_it(tmp_path, rng):
    images = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    split = Split(images, rng.integers(0, 10, 8), [str(i) for i in range(10)])
    splits = {"train": split, "test": split}
    teacher = Model("nin", 8, seed=11)
    teacher.save_weights(tmp_path / "teacher.npz")
    Model("nin", 8, seed=12).save_weights(tmp_path / "student.npz")
    cfg = tr.TrainConfig(network="nin", epochs=4, batch=4, lr=0.02, seed=3, progress=1, weights=str(tmp_path / "student.npz"),
                         teacher=str(tmp_path / "teacher.npz"), distill_weight=1.0, distill_temperature=1.0,
                         augment=False)

    result = tr.train(cfg, tmp_path / "run", splits=splits, stream=None)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "distilled from" in log and "weight 1, temperature 1" in log
    x = np.stack([b.x for b in batches(split, 8, result["preprocess"], np.random.default_rng(0),
                                          shuffle=False, augment_data=False, last="pad")])[0]
    before, after = Model("nin", 8, weights=tmp_path / "student.npz"), Model("nin", 8, weights=tmp_path / "run" / "weights.npz")
    t = teacher.forward(x).copy()
    kl = [float(distillation_loss(m.forward(x), t, np.zeros(8, int), 1.0, 1.0)[0].mean()) for m in (before, after)]
    assert kl[1] < 0.7 * kl[0]


def test_a_teacher_with_other_preprocessing_is_refused(tmp_path, rng):
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    split = Split(images, rng.integers(0, 10, 4), [str(i) for i in range(10)])
    from perforated.data import Preprocess

    tr.save_weights(Model("nin", 1, seed=1), tmp_path / "teacher.npz", Preprocess("channel", [0.0] * 3, [1.0] * 3))
    tr.save_weights(Model("nin", 1, seed=2), tmp_path / "student.npz", Preprocess("channel", [100.0] * 3, [50.0] * 3))
    cfg = tr.TrainConfig(network="nin", epochs=1, batch=4, lr=0.01, weights=str(tmp_path / "student.npz"),
                         teacher=str(tmp_path / "teacher.npz"))
    with pytest.raises(ValueError, match="the teacher .* was trained with preprocessing"):
        tr.train(cfg, tmp_path / "run", splits={"train": split}, stream=None)


def test_distillation_options_need_a_teacher(tmp_path, capsys):
    assert tr.main(["--out", str(tmp_path / "run"), "--distill-weight", "0.9"]) == 2
    assert "need --teacher" in capsys.readouterr().err


def test_backward_logits_refuses_bad_gradients(rng):
    m = Model("nin", 2, seed=1)
    m.forward(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    with pytest.raises(ValueError, match=r"dlogits must be an array of shape \(2, 10\), got list"):
        m.backward_logits([[0.0] * 10] * 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        distillation_loss(np.zeros((2, 10)), np.zeros((2, 10)), np.array([0, -1]), 0.5, 2.0)
