"""``tune``: finetune a causal LM on a chat dataset, LoRA or full, resumable bit for bit.

A run lives in one folder (``TuneFolder``). Every ``checkpoint_every`` optimizer steps the
trainable weights, the optimizer state and the RNG state are written as a checkpoint; a
run killed at any moment and started again with the same settings continues from the
newest checkpoint and ends with weights bit-identical to an uninterrupted run (the data
order is a pure function of the seed, the learning rate a pure function of the step).

Interventions passed as ``steering`` (preventative steering, directional ablation) act
during the training forward passes only: they are hooks entered around each step and
removed before any evaluation or saving, so the saved weights are the plain model's.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import read_json, write_json
from personaspace.interventions.hooks import intervene
from personaspace.models.adapter_folder import save_adapter
from personaspace.models.loading import LoadedModel
from personaspace.training.batches import batch_indices, batches_per_epoch, collate
from personaspace.training.checkpoint import (
    STATE,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    trainable,
)
from personaspace.training.dataset import TokenizedExample
from personaspace.training.lora import (
    LoraSettings,
    add_lora,
    check_settings,
    lora_config,
    transposed,
)
from personaspace.vectors.intervention import Intervention

Method = Literal["lora", "full"]
METHODS: tuple[str, ...] = ("lora", "full")
SETTINGS_FILE = "tune.json"
CHECKPOINTS = "checkpoints"
FINAL = "final"
SNAPSHOTS = "snapshots"
LOSSES_FILE = "losses.jsonl"


@dataclass(frozen=True)
class TuneConfig:
    """How to train. ``learning_rate`` ``None`` means 2e-4 for LoRA, 2e-5 for full.

    The learning rate warms up linearly over ``warmup_steps`` and then decays linearly to
    zero at the last step. ``max_steps`` (if set) stops earlier than ``epochs`` would.
    """

    method: Method = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.method == "lora" else 2e-5

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps of a run over ``n_examples``.

        Example:
            >>> TuneConfig(batch_size=4, grad_accum=2, epochs=2).total_steps(10)
            3
        """
        batches = self.epochs * batches_per_epoch(n_examples, self.batch_size)
        steps = -(-batches // self.grad_accum)
        return min(steps, self.max_steps) if self.max_steps is not None else steps

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) of ``total``.

        Example:
            >>> c = TuneConfig(learning_rate=1.0, warmup_steps=2)
            >>> [round(c.lr_at(s, 6), 3) for s in range(6)]
            [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
        """
        warmup = min(self.warmup_steps, total - 1)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        return self.lr * (total - step) / (total - warmup)

    def check(self) -> None:
        """Refuse settings that cannot train, naming the parameter."""
        if self.method not in METHODS:
            raise PersonaspaceError(
                f"unknown method '{self.method}'", fix="use lora or full", param="method"
            )
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        for name, value in positive.items():
            if value < 1:
                raise PersonaspaceError(f"{name} is {value}", fix="use 1 or more", param=name)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PersonaspaceError(
                f"learning_rate is {self.lr}", fix="use a positive number", param="learning_rate"
            )
        if self.method == "lora":
            check_settings(self.lora)
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise PersonaspaceError(
                "warmup_steps and weight_decay must not be negative", fix="use 0 or more"
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"] = self.lora.to_json() if self.method == "lora" else None
        data["learning_rate"] = self.lr
        return data


@dataclass(frozen=True)
class StepReport:
    """What one optimizer step did, for a progress bar."""

    step: int
    total: int
    loss: float
    tokens: int
    tokens_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class TuneResult:
    """The finished run: where its model is, its losses and its throughput."""

    folder: Path
    final: Path
    steps: int
    losses: list[float]
    tokens: int
    seconds: float
    resumed_from: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class TuneFolder:
    """The files of a tune run: ``tune.json``, ``checkpoints/``, ``losses.jsonl``, ``final/``.

    Example:
        >>> TuneFolder("runs/tune-x").final  # doctest: +SKIP
        PosixPath('runs/tune-x/final')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def snapshots(self) -> Path:
        return self.path / SNAPSHOTS

    def snapshot(self, step: int) -> Path:
        """The loadable model saved at ``step`` (``save_snapshots``): ``snapshots/step-N``."""
        return self.snapshots / f"step-{step:06d}"

    def file(self, name: str) -> Path:
        return self.path / name

    def is_done(self) -> bool:
        return self.final.is_dir()

    def check_settings(self, settings: dict[str, Any]) -> bool:
        """``True`` when the folder holds this run (resume), ``False`` when it is new;
        refuses a folder holding another run or other files."""
        header = self.file(SETTINGS_FILE)
        if header.is_file():
            stored = read_json(header)
            if stored != settings:
                changed = sorted(k for k in settings if stored.get(k) != settings.get(k))
                raise PersonaspaceError(
                    f"{self.path} holds a tune run with other settings ({', '.join(changed)})",
                    fix="rerun with the same settings to resume, or pick a new --out folder",
                )
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise PersonaspaceError(
                f"{self.path} exists and is not a tune run folder",
                fix="pick a new or empty --out folder",
            )
        return False


def _check_data(data: Sequence[TokenizedExample], config: TuneConfig) -> None:
    if not data:
        raise PersonaspaceError("the dataset is empty", fix="give at least one example")
    if config.total_steps(len(data)) < 1:
        raise PersonaspaceError("no optimizer step to take", fix="give more data or epochs")


def _write_losses(folder: TuneFolder, state: TrainState) -> None:
    from personaspace.fileformat import atomic_write

    with atomic_write(folder.file(LOSSES_FILE)) as handle:
        for step, (loss, tokens) in enumerate(zip(state.losses, state.tokens), start=1):
            handle.write(f'{{"step": {step}, "loss": {loss!r}, "tokens": {tokens}}}\n')


def _optimizer(lm: LoadedModel, config: TuneConfig) -> torch.optim.Optimizer:
    params = list(trainable(lm.model).values())
    if not params:
        raise PersonaspaceError("the model has no trainable parameters", fix="check the method")
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def prepare_model(lm: LoadedModel, config: TuneConfig) -> tuple[str, ...]:
    """Seed torch and make ``lm.model`` trainable: an injected LoRA adapter (returns its
    target modules) or every weight (returns ``()``)."""
    torch.manual_seed(config.seed)
    if config.method == "lora":
        return add_lora(lm.model, config.lora)
    lm.model.requires_grad_(True)
    return ()


def train_step(
    lm: LoadedModel,
    data: Sequence[TokenizedExample],
    config: TuneConfig,
    optimizer: torch.optim.Optimizer,
    step: int,
    total: int,
    steering: Sequence[Intervention] = (),
) -> tuple[float, int]:
    """One optimizer step (``grad_accum`` batches); returns its mean loss and its tokens."""
    from personaspace.training.loss import assistant_loss

    n_batches = config.epochs * batches_per_epoch(len(data), config.batch_size)
    first = step * config.grad_accum
    pad = int(lm.tokenizer.pad_token_id)
    batches = [
        collate([data[i] for i in batch_indices(len(data), config.batch_size, config.seed, b)], pad)
        for b in range(first, min(first + config.grad_accum, n_batches))
    ]
    denominator = sum(b.n_trained for b in batches)
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(step, total)
    lm.model.train()
    total_loss = 0.0
    try:
        with intervene(lm, steering):
            for batch in batches:
                loss = assistant_loss(lm.model, batch, denominator)
                loss.backward()
                total_loss += float(loss.detach())
    finally:
        lm.model.eval()
    if config.max_grad_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss, sum(b.n_tokens for b in batches)


def _save_model(
    target: Path,
    lm: LoadedModel,
    config: TuneConfig,
    targets: tuple[str, ...],
    base: str,
    save_tokenizer: bool,
) -> None:
    # written beside the target and renamed into place: a reader never sees half of it
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    extra = {"tune": config.to_json(), "base": base}
    if config.method == "lora":
        lora = lora_config(config.lora, targets, transposed(lm.model, targets))
        save_adapter(tmp, lm.model, lora, base, extra)
        if save_tokenizer:
            lm.tokenizer.save_pretrained(tmp)
    else:
        lm.model.save_pretrained(tmp)  # type: ignore[operator]
        lm.tokenizer.save_pretrained(tmp)
        write_json(tmp / "personaspace_tune.json", extra)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def tune(
    lm: LoadedModel,
    data: Sequence[TokenizedExample],
    out: str | Path,
    config: TuneConfig,
    *,
    base: str,
    settings: dict[str, Any] | None = None,
    steering: Sequence[Intervention] = (),
    at_checkpoint: Callable[[int, LoadedModel], None] | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    save_tokenizer: bool = False,
    save_snapshots: bool = False,
) -> TuneResult:
    """Train ``lm`` on ``data`` into the run folder ``out``; resume it if it holds this run.

    Args:
        lm: the model to train (changed in place: an adapter is injected, or its weights
            train); ``base`` is the spec it was loaded from (recorded in the output).
        data: tokenized examples (``tokenize_examples``).
        config: the training settings.
        settings: everything else that defines the run (data fingerprint, steering...),
            stored in ``tune.json`` with the config; a resume must match them exactly.
        steering: interventions active in the training forward passes only.
        at_checkpoint: called with the step and the model after step 0 (before training)
            and after each checkpoint (e.g. monitoring); it must not train the model. The
            global RNG is restored after it, so it cannot change the training.
        on_step: called after each optimizer step.
        save_tokenizer: write the tokenizer beside a LoRA adapter (a changed chat template).
        save_snapshots: also save the model as it is at step 0 and at every checkpoint, in
            the layout of ``final/`` (``snapshots/step-N``, never pruned): loadable models of
            the run's progress, e.g. the rungs of a training ladder.

    Example:
        >>> data = tokenize_examples(lm, read_chat_dataset("data.jsonl"))  # doctest: +SKIP
        >>> result = tune(lm, data, "runs/tune-x", TuneConfig(), base="smollm2-135m-instruct")
        ... # doctest: +SKIP
        >>> load_model(str(result.final))  # doctest: +SKIP
    """
    config.check()
    _check_data(data, config)
    folder = TuneFolder(out)
    header = {"config": config.to_json(), "base": base, **(settings or {})}
    resuming = folder.check_settings(header)
    total = config.total_steps(len(data))
    last = latest_checkpoint(folder.checkpoints) if resuming else None
    if resuming and folder.is_done() and last is not None:
        done = TrainState.from_json(read_json(last / STATE))
        return TuneResult(
            folder.path,
            folder.final,
            done.step,
            done.losses,
            sum(done.tokens),
            done.seconds,
            done.step,
        )
    targets = prepare_model(lm, config)  # refuses unknown target modules before any write
    optimizer = _optimizer(lm, config)
    folder.path.mkdir(parents=True, exist_ok=True)
    write_json(folder.file(SETTINGS_FILE), header)
    state = load_checkpoint(last, lm.model, optimizer) if last is not None else TrainState()
    resumed_from, before = state.step, state.seconds

    def checkpoint_hook(step: int) -> None:
        if save_snapshots and not folder.snapshot(step).is_dir():
            _save_model(folder.snapshot(step), lm, config, targets, base, save_tokenizer)
        if at_checkpoint is not None:
            with torch.random.fork_rng(devices=_cuda_devices()):
                at_checkpoint(step, lm)
            lm.model.eval()

    if state.step == 0:
        checkpoint_hook(0)
    elif save_snapshots and not folder.snapshot(state.step).is_dir():
        # killed between a checkpoint and its snapshot: the weights just loaded are that step's
        _save_model(folder.snapshot(state.step), lm, config, targets, base, save_tokenizer)
    started, done_tokens = time.perf_counter(), 0
    while state.step < total:
        loss, tokens = train_step(lm, data, config, optimizer, state.step, total, steering)
        state.step += 1
        state.losses.append(loss)
        state.tokens.append(tokens)
        done_tokens += tokens
        elapsed = time.perf_counter() - started
        if state.step % config.checkpoint_every == 0 or state.step == total:
            state.seconds = before + time.perf_counter() - started
            save_checkpoint(folder.checkpoints, lm.model, optimizer, state)
            prune_checkpoints(folder.checkpoints, config.keep_checkpoints)
            _write_losses(folder, state)
            checkpoint_hook(state.step)
        if on_step is not None:
            rate = done_tokens / elapsed if elapsed > 0 else 0.0
            left = (total - state.step) * elapsed / max(state.step - resumed_from, 1)
            on_step(StepReport(state.step, total, loss, tokens, rate, left))
    _save_model(folder.final, lm, config, targets, base, save_tokenizer)
    return TuneResult(
        folder.path,
        folder.final,
        state.step,
        state.losses,
        sum(state.tokens[resumed_from:]),
        time.perf_counter() - started,
        resumed_from,
    )
