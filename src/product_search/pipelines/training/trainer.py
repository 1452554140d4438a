"""How both trainings run the Hugging Face trainer: the device, the shared
arguments, a few loss lines in the log instead of one print per step, and the
loss history kept for the training report."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import ProgressCallback, Trainer, TrainerCallback

logger = logging.getLogger(__name__)

# Log lines per training beside the progress bar; the loss of every step
# still goes to the training history.
LOG_LINES = 20


def choose_device(requested: str = "auto") -> str:
    """CUDA, then Apple MPS, then CPU, unless a device is named."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def training_arguments(
    kind: type, output_dir: str, params: dict[str, Any], device: str, **extra: Any
) -> Any:
    """The trainer arguments both trainings share, from their parameters."""
    return kind(
        output_dir=output_dir,
        num_train_epochs=params["epochs"],
        per_device_train_batch_size=int(params["batch_size"]),
        learning_rate=float(params["learning_rate"]),
        # transformers 5: a float below 1 is a ratio of the total steps.
        warmup_steps=float(params["warmup_ratio"]),
        seed=int(params["seed"]),
        data_seed=int(params["seed"]),
        use_cpu=device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
        **extra,
    )


class _QuietProgress(ProgressCallback):
    """The trainer's progress bar without its print of every step's logs."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class _LossLogger(TrainerCallback):
    """One log line every ``max_steps / LOG_LINES`` steps, and at the last."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        every = max(1, state.max_steps // LOG_LINES)
        if not logs or "loss" not in logs:
            return
        if state.global_step % every and state.global_step != state.max_steps:
            return
        logger.info(
            "step %d/%d  epoch %.2f  loss %.4f",
            state.global_step, state.max_steps, logs.get("epoch", 0), logs["loss"],
        )  # fmt: skip


def quiet(trainer: Trainer) -> Trainer:
    """``trainer`` with its progress bar kept, its print of every step's logs
    replaced by :class:`_LossLogger`'s few lines."""
    trainer.add_callback(_LossLogger())
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    return trainer


def loss_by_step(trainer: Trainer) -> list[dict[str, float]]:
    """The loss of every logged step, for the training history."""
    return [
        {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"]}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
