"""uniopt inside torch's training tools (issue 16): Lightning, transformers' Trainer and
torch AMP take a uniopt optimizer as they take torch's own.

Oracle: the same run with ``torch.optim.AdamW`` (uniopt's ``flavor="torch"``), on CPU
in float32; checkpoints are resumed by Lightning and transformers themselves, and the
resumed run must equal the uninterrupted one to the bit.

Agreement is measured over the whole model: ``max |ours - theirs| / max |theirs|`` over
all parameters. An element-wise relative error is meaningless here: some parameters
have an analytically zero gradient (a BERT attention key bias, for which softmax is
shift invariant) and hold float32 noise near 1e-8, which Adam's normalised step turns
into an O(1) element-wise difference when the two optimizers round one ulp apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import uniopt

torch = pytest.importorskip("torch")

LR, WD = 1e-2, 1e-2
RTOL = 1e-6


def _adamw(kind: str, params: Any) -> Any:
    if kind == "uniopt":
        opt = uniopt.AdamW(params, lr=LR, weight_decay=WD, flavor="torch")
        assert isinstance(opt, torch.optim.Optimizer)
        return opt
    return torch.optim.AdamW(params, lr=LR, weight_decay=WD)


def _params(module: Any) -> list[Any]:
    return [p.detach().clone() for p in module.parameters()]


def _rel_err(ours: list[Any], theirs: list[Any]) -> float:
    assert len(ours) == len(theirs)
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    return diff / max(float(b.abs().max()) for b in theirs)


def _assert_trained_alike(ours: list[Any], theirs: list[Any], start: list[Any]) -> None:
    """Equal to torch.optim within RTOL, after training that moved the parameters."""
    assert _rel_err(theirs, start) > 1e-2, "the run did not train"
    err = _rel_err(ours, theirs)
    print(f"max relative difference from torch.optim.AdamW: {err:.2e}")
    assert err <= RTOL


def _assert_equal(ours: list[Any], theirs: list[Any]) -> None:
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def _checkpointed_optimizer_state(path: Path, state: Callable[[dict], dict]) -> dict:
    """The optimizer state a framework wrote: torch.optim's layout, loadable with
    ``weights_only=True``."""
    sd = state(torch.load(path, weights_only=True))
    assert set(sd["state"][0]) >= {"step", "exp_avg", "exp_avg_sq"}
    assert all(isinstance(t, torch.Tensor) for t in sd["state"][0].values())
    return sd


# ---- Lightning ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightning() -> Any:
    return pytest.importorskip("lightning")


def _fit(
    L: Any,
    kind: str,
    steps: int,
    *,
    scheduler: bool,
    tmp: Path,
    ckpt_path: Path | None = None,
    **trainer_args: Any,
):
    """A tiny regression trained full-batch (every step ends an epoch, so a checkpoint
    resumes exactly); returns the module, which records lr and betas at each step."""

    class Regression(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
            )
            self.start = _params(self)
            self.seen: list[tuple[float, tuple[float, float]]] = []

        def training_step(self, batch: Any, index: int) -> Any:
            group = self.optimizers().param_groups[0]
            self.seen.append((group["lr"], tuple(group["betas"])))
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            opt = self.opt = _adamw(kind, self.parameters())
            if not scheduler:
                return opt
            cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": cycle, "interval": "step"}}

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    module = Regression()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        **{"enable_checkpointing": False, **trainer_args},
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    assert trainer.global_step == steps
    assert trainer.optimizers[0] is module.opt
    assert isinstance(module.opt, uniopt.AdamW) == (kind == "uniopt")
    return module


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_lightning_configure_optimizers_returns_uniopt(lightning, tmp_path):
    ours = _fit(lightning, "uniopt", 8, scheduler=False, tmp=tmp_path)
    theirs = _fit(lightning, "torch", 8, scheduler=False, tmp=tmp_path)
    _assert_trained_alike(_params(ours), _params(theirs), theirs.start)


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_lightning_scheduler_checkpoint_and_resume(lightning, tmp_path):
    """A dict with a step-interval OneCycleLR (lr and beta1 cycled); Lightning's
    ModelCheckpoint saves at step 5; ``fit(ckpt_path=...)`` resumes it, with uniopt
    and with torch.optim.AdamW (torch's own optimizer resumes uniopt's checkpoint)."""
    save = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=5, save_top_k=-1
    )
    ours = _fit(
        lightning,
        "uniopt",
        10,
        scheduler=True,
        tmp=tmp_path,
        enable_checkpointing=True,
        callbacks=[save],
    )
    theirs = _fit(lightning, "torch", 10, scheduler=True, tmp=tmp_path)
    assert ours.seen == theirs.seen and len({beta for _, beta in ours.seen}) > 2
    _assert_trained_alike(_params(ours), _params(theirs), theirs.start)

    ckpt = tmp_path / "ckpt" / "step=5.ckpt"
    sd = _checkpointed_optimizer_state(ckpt, lambda c: c["optimizer_states"][0])
    assert int(sd["state"][0]["step"]) == 5
    resumed = _fit(lightning, "uniopt", 10, scheduler=True, tmp=tmp_path, ckpt_path=ckpt)
    assert resumed.seen == ours.seen[5:]
    _assert_equal(_params(resumed), _params(ours))
    by_torch = _fit(lightning, "torch", 10, scheduler=True, tmp=tmp_path, ckpt_path=ckpt)
    assert by_torch.seen == ours.seen[5:]
    _assert_trained_alike(_params(by_torch), _params(theirs), theirs.start)


# ---- transformers' Trainer ----------------------------------------------------------


def test_transformers_trainer_resume_from_checkpoint(tmp_path, monkeypatch):
    """A tiny BERT built from a config (no download), ``optimizers=(uniopt, StepLR)``,
    gradient clipping by the Trainer, checkpoints every 4 steps; ``resume_from_checkpoint``
    continues to the uninterrupted run's parameters, with uniopt and with torch.optim."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    g = torch.Generator().manual_seed(1)
    ids, labels = (
        torch.randint(0, 32, (32, 6), generator=g),
        torch.randint(0, 2, (32,), generator=g),
    )
    data = [{"input_ids": ids[i], "labels": labels[i]} for i in range(len(ids))]
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )

    def train(kind: str, out: str, resume: Path | None = None, save: bool = False):
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config)
        start = _params(model)
        opt = _adamw(kind, model.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / out),
            max_steps=8,
            per_device_train_batch_size=4,
            save_strategy="steps" if save else "no",
            save_steps=4,
            report_to=[],
            use_cpu=True,
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, optimizers=(opt, sched)
        )
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        assert trainer.optimizer.optimizer is opt  # accelerate's wrapper around ours
        assert trainer.state.global_step == 8 and sched.get_last_lr() == [LR * 0.25]
        return _params(model), start

    ours, _ = train("uniopt", "ours", save=True)
    theirs, start = train("torch", "theirs")
    _assert_trained_alike(ours, theirs, start)

    checkpoint = tmp_path / "ours" / "checkpoint-4"
    sd = _checkpointed_optimizer_state(checkpoint / "optimizer.pt", lambda c: c)
    assert int(sd["state"][0]["step"]) == 4
    resumed, _ = train("uniopt", "resumed", resume=checkpoint)
    _assert_equal(resumed, ours)
    by_torch, _ = train("torch", "by_torch", resume=checkpoint)
    _assert_trained_alike(by_torch, theirs, start)


# ---- torch.amp ----------------------------------------------------------------------


INF_AT = 3


def _amp_run(kind: str, clip: bool, steps: int = 8, inf_at: int = INF_AT):
    """bfloat16 autocast on CPU, a GradScaler (growing every 2 steps), an infinite
    gradient at step ``inf_at`` (the scaler skips that step and halves its scale),
    optionally ``clip_grad_norm_`` between ``unscale_`` and ``step``."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    start = _params(net)
    opt = _adamw(kind, net.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
    trace = []
    for step in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
            assert out.dtype == torch.bfloat16
            loss = torch.nn.functional.mse_loss(out.float(), y)
        scaler.scale(loss).backward()
        if step == inf_at:
            net[0].weight.grad[0, 0] = float("inf")
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5) if clip else None
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), None if norm is None else float(norm)))
    steps_taken = {int(s["step"]) for s in opt.state.values()}
    return _params(net), start, trace, steps_taken


@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "clip_grad_norm_"])
def test_grad_scaler_with_autocast(clip):
    ours, _, our_trace, our_steps = _amp_run("uniopt", clip)
    theirs, start, their_trace, their_steps = _amp_run("torch", clip)
    assert our_steps == their_steps == {7}  # the infinite step was skipped
    assert [s for s, _ in our_trace] == [s for s, _ in their_trace]
    assert our_trace[INF_AT][0] == our_trace[INF_AT - 1][0] / 2  # the scaler backed off
    if clip:
        norms = [(a, b) for (_, a), (_, b) in zip(our_trace, their_trace)]
        assert all(a == b or abs(a - b) <= RTOL * b for a, b in norms)
    _assert_trained_alike(ours, theirs, start)
