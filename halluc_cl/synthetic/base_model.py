"""Build the synthetic base model: a word-level tokenizer and a small decoder trained from scratch.

Run explicitly with ``halluc-cl pretrain --world default``; otherwise it is built on first use
of ``synthetic://<world>`` and cached under ``$HALLUC_CL_CACHE`` (default
``~/.cache/halluc-cl``), keyed by a hash of the world and model configuration.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from halluc_cl.facts.padding import right_pad
from halluc_cl.facts.prompts import PromptFormat, encode_example
from halluc_cl.facts.schema import Fact, write_facts
from halluc_cl.io import cache_root, locked_build
from halluc_cl.synthetic.ground_truth import accuracy_report, categorize_known
from halluc_cl.synthetic.presets import BaseModelConfig, preset
from halluc_cl.synthetic.world import SyntheticWorld

BUILD_VERSION = 1  # bump when the build procedure changes, to invalidate caches
SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>"]


def build_key(world: str) -> str:
    """Hash of everything that determines the built model."""
    chosen = preset(world)
    blob = json.dumps(
        {"world": chosen.world.to_dict(), "base": asdict(chosen.model), "v": BUILD_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def world_dir(world: str) -> Path:
    """Cache folder of a synthetic world: facts, tokenizer and base model."""
    return cache_root() / "synthetic" / f"{world}-{build_key(world)}"


def train_tokenizer(world: SyntheticWorld, fmt: PromptFormat) -> PreTrainedTokenizerFast:
    """Word-level tokenizer trained on the world's texts and the prompt format."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    extra = [fmt.prompt(""), "I don't know"]
    tok.train_from_iterator(world.vocabulary_text() + extra, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
        padding_side="right", model_max_length=256,
    )


def new_model(cfg: BaseModelConfig, vocab_size: int, tokenizer) -> torch.nn.Module:
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
           "bos_token_id": tokenizer.eos_token_id}
    if cfg.arch == "gpt2":
        conf = GPT2Config(vocab_size=vocab_size, n_positions=256, n_embd=cfg.n_embd,
                          n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
                          embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, **ids)
        return GPT2LMHeadModel(conf)
    conf = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.n_embd,
                       intermediate_size=4 * cfg.n_embd, num_hidden_layers=cfg.n_layer,
                       num_attention_heads=cfg.n_head, max_position_embeddings=256,
                       attention_dropout=cfg.dropout, **ids)
    return LlamaForCausalLM(conf)


class PretrainCorpus:
    """Per-epoch pretraining sequences: bios of Known entities + QA of HighlyKnown facts."""

    def __init__(self, world: SyntheticWorld, facts: list[Fact], tokenizer, fmt, cfg, seed: int):
        self.world, self.tokenizer, self.fmt, self.cfg, self.seed = world, tokenizer, fmt, cfg, seed
        self.by_entity: dict[str, list[Fact]] = {}
        for f in facts:
            if f.category != "Unknown":
                self.by_entity.setdefault(f.subject, []).append(f)
        self.qa = [f for f in facts if f.category == "HighlyKnown"]

    def sequences(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        eos = self.tokenizer.eos_token_id
        seqs = []
        for entity_facts in self.by_entity.values():
            for _ in range(self.cfg.bios_per_epoch):
                text = self.world.bio(entity_facts, rng)
                seqs.append(self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])
        for f in self.qa:
            question = rng.choice(self.world.questions(f))
            seqs.append(encode_example(self.tokenizer, self.fmt, question, f.object)["input_ids"])
        return seqs

    def batches(self, epoch: int) -> list[list[list[int]]]:
        """Length-bucketed batches in random order (little padding, same data)."""
        seqs = sorted(self.sequences(epoch), key=len)
        size = self.cfg.batch_size
        batches = [seqs[i:i + size] for i in range(0, len(seqs), size)]
        random.Random(self.seed * 7 + epoch).shuffle(batches)
        return batches


class _PretrainModule(L.LightningModule):
    def __init__(self, model, corpus: PretrainCorpus, cfg: BaseModelConfig, steps_per_epoch: int):
        super().__init__()
        self.model, self.corpus, self.cfg = model, corpus, cfg
        self.total_steps = steps_per_epoch * cfg.epochs

    def train_dataloader(self):
        batches = self.corpus.batches(self.current_epoch)
        pad = self.corpus.tokenizer.pad_token_id

        def collate(batch):
            ids, mask = right_pad(batch, pad)
            labels = ids.masked_fill(mask == 0, -100)
            return ids, mask, labels

        return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=collate)

    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=0.01)
        sched = get_cosine_schedule_with_warmup(opt, int(0.05 * self.total_steps), self.total_steps)
        return [opt], [{"scheduler": sched, "interval": "step"}]


def build_base_model(world: str, force: bool = False, verbose: bool = True) -> Path:
    """Build (or reuse) the cached base model of a synthetic world and return its folder.

    A file lock makes concurrent callers (parallel runs, DDP ranks) wait for one build.
    """
    out = world_dir(world)
    return locked_build(out, "build.json", lambda tmp: _build(world, out, tmp, verbose), force)


def _build(world: str, out: Path, tmp: Path, verbose: bool) -> None:
    chosen = preset(world)
    wcfg, cfg = chosen.world, chosen.model
    if verbose:
        print(f"Building the synthetic base model for world {world!r} (cached in {out})")
    synthetic = SyntheticWorld(wcfg)
    facts = synthetic.facts()
    fmt = PromptFormat()
    tokenizer = train_tokenizer(synthetic, fmt)
    corpus = PretrainCorpus(synthetic, facts, tokenizer, fmt, cfg, seed=wcfg.seed)
    steps = len(corpus.batches(0))
    with torch.random.fork_rng(devices=[]):
        py_state = random.getstate()
        torch.manual_seed(wcfg.seed)
        model = new_model(cfg, len(tokenizer), tokenizer)
        trainer = L.Trainer(
            max_epochs=cfg.epochs, precision=cfg.precision, logger=False,
            enable_checkpointing=False, enable_model_summary=False, gradient_clip_val=1.0,
            reload_dataloaders_every_n_epochs=1, enable_progress_bar=verbose, devices=1,
            accelerator="cpu" if cfg.n_embd < 512 else "auto",
            callbacks=[TQDMProgressBar(refresh_rate=max(1, steps // 4))] if verbose else None,
        )
        trainer.fit(_PretrainModule(model, corpus, cfg, steps))
        random.setstate(py_state)
    model = model.float().eval()
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)  # pretraining dropout is not inherited by SFT
    facts = categorize_known(model, tokenizer, synthetic, facts, fmt)
    report = accuracy_report(model, tokenizer, facts, fmt)
    if verbose:
        print("Base model greedy exact match: " + ", ".join(
            f"{k} {v:.3f} (n={report['n_' + k]})" for k, v in report.items() if k[:2] != "n_"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_facts(tmp / "facts.jsonl", facts)
    (tmp / "build.json").write_text(json.dumps(
        {"world": wcfg.to_dict(), "base": asdict(cfg), "accuracy": report,
         "n_params": sum(p.numel() for p in model.parameters())}, indent=2))
