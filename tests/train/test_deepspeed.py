"""DeepSpeed on CPU: the ZeRO configs compose with every method, the stage is read from the
strategy, plugins that need whole weights refuse ZeRO-3, and the ZeRO helpers are no-ops on
unpartitioned models. The runs themselves need CUDA: tools/gpu_check.sh (docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from halluc_cl.cli import main
from halluc_cl.errors import ConfigError
from halluc_cl.experiments.config_files import method_configs
from halluc_cl.lm.zero import deepspeed_stage, full_state_dict, gathered, is_partitioned
from halluc_cl.methods import EWC, FitContext, L2ToAnchor

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["sft", "distill", "l2", "ewc", "freeze_attention_only", "lora", "replay"]


def _configs(method: str) -> list[str]:
    return [a for p in method_configs(method) for a in ("--config", str(p))]


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_zero_configs_compose_with_every_method(method, stage, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *_configs(method), "--config",
              str(ROOT / f"configs/deepspeed/zero{stage}.yaml"), "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out  # deepspeed, when installed, logs to stdout on import
    cfg = yaml.safe_load("\n".join(ln for ln in out.splitlines() if not ln.startswith("[20")))
    strategy = cfg["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert strategy["init_args"]["stage"] == stage
    assert strategy["init_args"]["exclude_frozen_parameters"] is True
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    # the method's own plugins are untouched by the overlay
    method_cfg = yaml.safe_load(method_configs(method)[-1].read_text())
    assert [r["class_path"] for r in cfg["model"]["methods"]] == \
        [r["class_path"] for r in method_cfg.get("model", {}).get("methods", [])]


class DeepSpeedStrategy:  # stands in for lightning's (same name, same ``config`` layout)
    def __init__(self, stage: int) -> None:
        self.config = {"zero_optimization": {"stage": stage}}


def _context(strategy) -> FitContext:
    return FitContext(student=torch.nn.Linear(3, 2),
                      zero_stage=deepspeed_stage(SimpleNamespace(strategy=strategy)))


def test_stage_is_read_from_the_strategy():
    assert deepspeed_stage(SimpleNamespace(strategy=DeepSpeedStrategy(3))) == 3
    assert deepspeed_stage(SimpleNamespace(strategy=object())) is None
    assert deepspeed_stage(None) is None


@pytest.mark.parametrize("plugin", [L2ToAnchor(), EWC()])
def test_anchor_plugins_refuse_zero3_but_not_zero2(plugin):
    with pytest.raises(ConfigError, match="ZeRO-3 shards them"):
        plugin.setup(_context(DeepSpeedStrategy(3)))
    plugin.setup(_context(DeepSpeedStrategy(2)))  # whole weights on every rank


def test_zero_helpers_are_no_ops_without_partitioning():
    model = torch.nn.Linear(3, 2)
    assert not is_partitioned(model)
    with gathered(model):
        model.weight.data.fill_(1.5)
    state = full_state_dict(model)
    assert torch.equal(state["weight"], torch.full((2, 3), 1.5))
    state["weight"].zero_()  # a copy, not a view
    assert model.weight.data.eq(1.5).all()


def test_real_strategy_builds_from_the_config():
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy as Real

    for stage in (2, 3):
        args = yaml.safe_load((ROOT / f"configs/deepspeed/zero{stage}.yaml").read_text())
        strategy = Real(**args["trainer"]["strategy"]["init_args"])
        assert deepspeed_stage(SimpleNamespace(strategy=strategy)) == stage
