"""bench.torch_models: a one-round run writes the table and the JSON with every row timed."""
import json
import os

import pytest

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("torch is not run under the AddressSanitizer pass", allow_module_level=True)
pytest.importorskip("torch")
pytest.importorskip("torchvision")

from bench import torch_models  # noqa: E402


def test_one_round_writes_table_and_json(tmp_path):
    assert torch_models.main(["--models", "resnet18", "--batch", "2", "--size", "32", "--rates", "0.5",
                              "--rounds", "1", "--out", str(tmp_path)]) == 0
    (res,) = json.loads((tmp_path / "torch_models.json").read_text())
    assert res["model"] == "resnet18" and res["machine"]["cpu"]
    engines = [(r["phase"], r["engine"]) for r in res["rows"]]
    assert engines == [(p, e) for p in ("forward", "train step")
                       for e in ("pytorch", "ours (C path)", "ours (pure PyTorch path)")]
    assert all(r["min_ms"] > 0 and r["vs_pytorch_dense"] > 0 for r in res["rows"])
    assert res["rows"][0]["vs_pytorch_dense"] == 1.0
    text = (tmp_path / "torch_models.md").read_text()
    assert "## resnet18, batch 2, 32x32" in text and "ours (C path)" in text
