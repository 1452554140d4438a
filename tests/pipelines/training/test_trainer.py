"""How both trainings run the trainer: the device they choose."""

from __future__ import annotations

from product_search.pipelines.training import trainer


def test_device_is_chosen_automatically_or_named(monkeypatch):
    assert trainer.choose_device("cuda") == "cuda"
    monkeypatch.setattr(trainer.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer.torch.backends.mps, "is_available", lambda: False)
    assert trainer.choose_device("auto") == "cpu"
    monkeypatch.setattr(trainer.torch.backends.mps, "is_available", lambda: True)
    assert trainer.choose_device("auto") == "mps"
    monkeypatch.setattr(trainer.torch.cuda, "is_available", lambda: True)
    assert trainer.choose_device("auto") == "cuda"
