"""FactSFTModule: SFT of a causal LM on facts, with methods and hallucination metrics.

The first ``warmup_epochs`` epochs are the format warm-up on Known facts; at its end the
student is snapshotted (teacher for distillation, anchor for L2/EWC) and the held-out Known
answers of that moment become the reference of ``hallucination_rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from halluc_cl.distributed import any_rank, total_over_ranks
from halluc_cl.errors import ConfigError
from halluc_cl.lm.context import context_limit
from halluc_cl.lm.loading import load_causal_lm, load_tokenizer
from halluc_cl.lm.precision import slow_bf16_warning
from halluc_cl.lm.zero import deepspeed_stage
from halluc_cl.methods.base import Method
from halluc_cl.methods.context import FitContext, FitData
from halluc_cl.methods.teacher import LiveTeacher, SnapshotFile, snapshot_teacher
from halluc_cl.metrics.decline import PeakDecline
from halluc_cl.metrics.drift import RepresentationDrift, prompt_states
from halluc_cl.metrics.snapshot import LASTING_WINDOW
from halluc_cl.metrics.split_metrics import SPLITS, SplitMetrics
from halluc_cl.runtime.fsdp import is_fsdp, whole_root
from halluc_cl.runtime.rng import rng_state, set_rng_state
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.evaluation import EvalMethod
from halluc_cl.train.evaluation_hooks import EvaluationHooks
from halluc_cl.train.fit_checks import check_fit, methods_of, validate_args
from halluc_cl.train.run_files import run_dir
from halluc_cl.train.step import plugin_outputs, student_forward


class FactSFTModule(EvaluationHooks, L.LightningModule):
    """Fine-tunes ``model`` on question→answer facts.

    Args:
        model: ``synthetic://<world>``, a local model folder, a GGUF file or a hub id.
        methods: Methods (``class_path``/``init_args``: penalties, transforms, data-side
            options) that compose in order.
        optimizer: Optimizer factory, e.g. ``torch.optim.AdamW`` with ``lr``.
        scheduler: Optional LR scheduler factory (stepped per epoch).
        warmup_epochs: Leading Known-only epochs; must match ``data.warmup_epochs`` (linked)
            and be fewer than ``trainer.max_epochs``.
        snapshot: When the teacher/anchor snapshot is taken: at the end of the ``warmup``
            or from the ``base`` model before any training.
        dtype: Weight dtype of the loaded model: ``float32`` or ``bfloat16``.
        max_new_tokens: Answer length limit of greedy evaluation.
        gradient_checkpointing: Recompute activations in the backward pass (less memory for
            large models, about a third more compute).
        drift_layer: Log ``heldout_drift``, the mean cosine distance of held-out Known facts'
            hidden states at this layer (last prompt token; -1 = last block) from their
            states at the end of the warm-up. ``None`` turns it off.
        eval_method: ``forward``: exact match from one teacher-forced forward pass per batch
            (generation only for the prediction text of facts that match no alias, when
            predictions are saved); ``generate``: greedy generation of every answer, matched
            as text (case, punctuation and articles aside); ``hybrid``: ``generate``'s
            numbers, generating only the facts whose greedy answer is not an alias as written
            (one forward decides those).
        compile: ``torch.compile`` the student's and the live teacher's forward (in place,
            dynamic shapes; parameter names and checkpoints are unchanged). For GPUs: fewer,
            fused kernels per step; the first steps pay the compilation.
        lasting_window: Evaluations after the warm-up that the lasting loss from the snapshot
            (``<split>_lasting_loss``) averages: the last ones, the current one included.
        loss_positions: ``all``: transformers' causal-LM loss, which upcasts and
            log-softmaxes the logits of every position; ``answer``: the same loss (up to
            summation order) from the labelled positions only (``train/step.py``), so that no
            fp32 copy of the batch's full-vocabulary logits is made (Gemma's 262 144 tokens).
        regularizers: Deprecated name of ``methods`` (removed in 0.3.0).
    """

    def __init__(
        self,
        model: str = "synthetic://default",
        methods: list[Method] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        warmup_epochs: int = 1,
        snapshot: Literal["warmup", "base"] = "warmup",
        dtype: str = "float32",
        max_new_tokens: int = 8,
        gradient_checkpointing: bool = False,
        drift_layer: int | None = None,
        eval_method: EvalMethod = "forward",
        compile: bool = False,
        lasting_window: int = LASTING_WINDOW,
        loss_positions: Literal["all", "answer"] = "all",
        regularizers: list[Method] | None = None,
    ) -> None:
        super().__init__()
        validate_args(warmup_epochs, dtype, lasting_window)
        methods = methods_of(methods, regularizers)
        self.save_hyperparameters(ignore=["methods", "regularizers", "optimizer", "scheduler"])
        self.model_spec, self.weight_dtype = model, dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.student: nn.Module | None = None  # ``load_model``, from ``setup``
        self.tokenizer, self.methods = None, methods
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.warmup_epochs, self.max_new_tokens = warmup_epochs, max_new_tokens
        self.snapshot = snapshot
        # one collection per split, fed every process's outcomes (``EvaluationHooks``)
        self.split_metrics = nn.ModuleDict({s: SplitMetrics(s, sync_on_compute=False)
                                            for s in SPLITS})
        self.lasting_window = lasting_window
        self.peak = PeakDecline()  # held-out peak and decline since the warm-up's end
        self.drift = RepresentationDrift()  # of held-out states from the warm-up's end
        self.teacher_file = SnapshotFile()  # the live teacher's weights (methods/teacher.py)
        self._resumed_after_snapshot = False  # the methods' on_resume is due (on_train_start)
        self.snapshot_taken = False
        self._plugins_ready = False  # the methods' setup runs once per module
        self.reference: dict[str, bool] = {}  # fact id -> answered correctly at the warm-up's end
        self.history: list[dict] = []  # metrics of every evaluation
        self.last_predictions: list[dict] = []
        self.drift_layer, self.eval_method, self.compile_model = drift_layer, eval_method, compile
        self.loss_positions = loss_positions
        self.want_prediction_text = True  # RunArtifacts turns it off when it saves none
        self.drift_reference: dict[str, torch.Tensor] = {}  # fact id -> state at warm-up end
        self._eval_states: dict[str, torch.Tensor] = {}
        self._rng_to_restore: dict | None = None  # RNG states of a checkpoint being resumed
        self.cost = {"student_tokens": 0, "teacher_tokens": 0}  # this process's; ``add_cost``
        self.data: FitData | None = None  # ``connect``

    def connect(self, data: FitData | None) -> None:
        """Hand the module the fit's data module (what methods see of it: ``FitData``); the
        CLI and the API do it once they have built both. Without it, methods that need data
        refuse to run and the checks that read it are skipped."""
        self.data = data

    def fit_context(self) -> FitContext:
        """The ``FitContext`` a method hook is given now."""
        trainer = self._attached_trainer()
        return FitContext(
            student=self.student, tokenizer=self.tokenizer, data=self.data, device=self.device,
            rank=self.global_rank, world=trainer.world_size if trainer is not None else 1,
            zero_stage=deepspeed_stage(trainer), fsdp=is_fsdp(trainer),
            compile=self.compile_model,
            add_cost=self.add_cost, log=self._log_method_value,
            optimizer_state=(lambda: self.optimizers().optimizer.state)
            if trainer is not None else None,
            snapshot_teacher=lambda: self.teacher_file.built(self._live_teacher()),
            restore_teacher=lambda: self.teacher_file.restore(self._live_teacher(),
                                                              self._checkpoint_folder()))

    def _log_method_value(self, name: str, value: torch.Tensor) -> None:
        if self.logs_this_step():
            self.log(name, value, batch_size=1)

    def _run_hook(self, hook: Callable[[FitContext], None]) -> None:
        """A method's hook (``setup``, ``on_snapshot``) on a fresh context; a method that wraps
        the student (LoRA) leaves the wrapped model in the context, which the module takes
        back."""
        context = self.fit_context()
        hook(context)
        self.student = context.student

    # --- phases -------------------------------------------------------------------------
    @property
    def warmup_end_epoch(self) -> int:
        """The last warm-up epoch: its end takes the snapshot (``on_train_epoch_end``), its
        evaluation is the hallucination and drift reference and the first the held-out peak
        is taken over (``EvaluationHooks``), and the summary's ``warmup_end``. The data module
        switches to the SFT mix after it (``data.warmup_epochs``, linked to
        ``model.warmup_epochs``)."""
        return self.warmup_epochs - 1

    @property
    def in_sft_phase(self) -> bool:
        return self.current_epoch > self.warmup_end_epoch

    def _attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or ``None`` before one is attached (where
        ``self.trainer`` raises)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _ordered_plugins(self) -> list[Method]:
        return sorted(self.methods, key=lambda r: r.setup_order)

    def prepare_data(self) -> None:
        """Build the base model of a ``synthetic://`` model if it is not cached yet (Lightning
        calls this once per node, before any process loads it)."""
        resolve(self.model_spec)

    def load_model(self) -> None:
        """Load the student and its tokenizer from ``model``; once (later calls return).

        ``setup`` calls it, so a Trainer verb loads the model where it runs, not when the
        config is parsed. Not Lightning's ``configure_model`` hook: DeepSpeed ZeRO-3 runs that
        inside ``deepspeed.zero.Init``, where ``from_pretrained`` would copy the weights into
        parameters that are already partitioned; loaded here, the whole model exists before
        the strategy shards it. Code that drives the module without a Trainer calls it
        first.
        """
        if self.student is not None:
            return
        path = resolve(self.model_spec)  # a synthetic world's build is cached (prepare_data)
        self.student = load_causal_lm(path, self.weight_dtype).train()  # loads in eval mode
        if self.gradient_checkpointing:
            self.student.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tokenizer = load_tokenizer(path)

    def setup(self, stage: str) -> None:
        self.load_model()
        if stage == "fit":
            data = self.data
            check_fit(self.trainer, self.warmup_epochs,
                      data.warmup_batches() if data is not None else None,
                      wants_extra=any(m.uses_extra_inputs for m in self.methods),
                      has_extra=data is not None and data.extra_per_batch > 0)
            warning = slow_bf16_warning(self.trainer.precision, self.device.type)
            if warning:
                rank_zero_warn(warning)
        limit = context_limit(self.student)
        if limit is not None and self.data is not None:
            self.data.check_context(limit, self.max_new_tokens, training=stage == "fit")
        if self._plugins_ready:
            return
        # every stage: a LoRA checkpoint only loads into the wrapped model
        for reg in self._ordered_plugins():
            self._run_hook(reg.setup)
        if self.compile_model:
            self.student.compile(dynamic=True)
        self._plugins_ready = True

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:  # resumed: go on with the saved random streams
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.snapshot == "base" and self.current_epoch == 0 and self.global_step == 0:
            self.take_snapshot()
        if self.in_sft_phase and self.methods and not self.snapshot_taken:
            raise ConfigError("this checkpoint holds no snapshot for these methods (it was "
                              "saved by a run without them); start the run from scratch")
        if self._resumed_after_snapshot:  # the student is on its device now
            for reg in self._ordered_plugins():
                self._run_hook(reg.on_resume)
            self._resumed_after_snapshot = False

    def on_train_epoch_end(self) -> None:
        if self.snapshot == "warmup" and self.current_epoch == self.warmup_end_epoch:
            self.take_snapshot()

    def take_snapshot(self) -> None:
        """Let the methods take what they keep of the snapshot (anchors, Fisher, their
        teacher); with ``data.extra_select=nearest``, the data module ranks the extra inputs'
        pool by the snapshot's states."""
        with whole_root(self._attached_trainer()):  # FSDP: forwards outside a step
            for reg in self._ordered_plugins():
                self._run_hook(reg.on_snapshot)
            if self.data is not None and self.data.extra_select == "nearest":
                self.data.rank_neighbours(self.prompt_states)
        self.snapshot_taken = True

    def prompt_states(self, prompts: list[list[int]]) -> torch.Tensor:
        """The student's last-block hidden states ``[n, d]`` at the last token of each prompt
        (counted as teacher tokens: a forward of the snapshot, once, on every process)."""
        self.add_cost(teacher=sum(len(p) for p in prompts), every_process=True)
        return prompt_states(self.student, prompts, self.tokenizer.pad_token_id, layer=-1)

    def _live_teacher(self) -> LiveTeacher:
        return snapshot_teacher(self.fit_context(), self._ordered_plugins())

    # --- training -----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        extra = self.in_sft_phase and "extra_input_ids" in batch and any(
            r.uses_extra_inputs for r in self.methods)
        sft_loss, logits, extra_logits = student_forward(self, batch, extra)
        loss = sft_loss
        self.add_cost(student=batch["attention_mask"].sum())
        logged = {"train/sft_loss": loss}
        if self.in_sft_phase and self.methods:
            outputs = plugin_outputs(self, batch, sft_loss, logits, extra_logits)
            for reg in self.methods:
                penalty = reg.penalty(batch, outputs)
                if penalty is not None:
                    logged[f"reg/{reg.name}"] = penalty
                    loss = loss + penalty
        if any_rank(not torch.isfinite(loss)):  # every process stops, or none
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}")
        if self.logs_this_step():  # step values reach the logger only on its steps anyway
            n = batch["input_ids"].shape[0]
            # each process's loss is its share of the global batch's (``loss_normaliser``):
            # their mean over processes is the one-process value
            self.log("train/sft_loss", logged.pop("train/sft_loss"), batch_size=n, prog_bar=True,
                     sync_dist=True)
            for name, value in logged.items():
                self.log(name, value, batch_size=n, sync_dist=True)
            self.log("train/loss", loss, batch_size=n, sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.in_sft_phase:
            context = self.fit_context()
            for reg in self.methods:
                reg.before_optimizer_step(context)

    def logs_this_step(self) -> bool:
        """Whether the logger writes this step's values: every ``trainer.log_every_n_steps``
        optimizer steps and at the last one (Lightning's own rule, from public state)."""
        trainer = self._attached_trainer()
        if trainer is None:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or trainer.should_stop)

    def add_cost(self, student=0, teacher=0, every_process: bool = False) -> None:
        """Count tokens through the student (forward + backward) and through the teacher
        (forward only); ``summary.json`` reports them as the run's cost (``run_cost``).

        Args:
            student: Tokens through the student.
            teacher: Tokens through the teacher.
            every_process: The pass runs on every process with the same inputs (a Fisher
                estimate, a teacher cache): counted once, by rank 0.
        """
        if every_process and self.global_rank != 0:
            return
        self.cost["student_tokens"] += student  # a tensor stays a tensor: no device sync
        self.cost["teacher_tokens"] += teacher

    def run_cost(self) -> dict[str, int]:
        """Tokens of the whole run, every process's summed (a collective: every rank calls)."""
        return total_over_ranks(self.cost)

    def configure_optimizers(self):
        params = [p for p in self.student.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("no trainable parameters left (every parameter is frozen)")
        opt = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler_factory(opt)}

    # --- checkpoint ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["halluc_cl"] = {
            "reference": self.reference, "history": self.history,
            "snapshot_taken": self.snapshot_taken, "drift_reference": self.drift_reference,
            "teacher": self.teacher_file.reference(lambda: run_dir(self.trainer) / "checkpoints",
                                                   write=self.global_rank == 0),
            "methods": [r.state_dict() for r in self.methods],
            "rng": rng_state(), "cost": self.run_cost(),
        }

    def _checkpoint_folder(self) -> Path | None:
        """The folder of the checkpoint the trainer is resuming from, if any."""
        trainer = self._attached_trainer()
        return Path(trainer.ckpt_path).parent if trainer and trainer.ckpt_path else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("halluc_cl", {})
        self.reference, self.history = state.get("reference", {}), state.get("history", [])
        self.peak.reset()  # the evaluations since the warm-up's end, as before the stop
        for h in self._since_warmup():
            self.peak.update(h.get("heldout_val_acc"), h.get("heldout_test_acc"))
        self.drift_reference = state.get("drift_reference", {})
        self.snapshot_taken = state.get("snapshot_taken", state.get("teacher") is not None)
        # the live teacher's file path and sha256 (its weights, before 0.2); the methods
        # take their teachers back in on_resume
        self.teacher_file.saved = state.get("teacher")
        self._resumed_after_snapshot = self.snapshot_taken
        saved = state.get("methods", state.get("regularizers", []))  # the key before 0.2
        for reg, reg_state in zip(self.methods, saved):
            reg.load_state_dict(reg_state)
        self._rng_to_restore = state.get("rng")  # applied in on_train_start
        if "cost" in state:  # the whole run's: rank 0 carries it on, the others start at 0
            self.cost = {k: int(v) if self.global_rank == 0 else 0
                         for k, v in state["cost"].items()}
