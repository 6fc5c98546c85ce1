"""What a fit prints first: parameter counts and the run folder, no FLOPs, no advertisement
(the whole first screen of a ``halluc-cl fit``: ``tests/test_wheel.py``)."""

import logging

from lightning.pytorch.callbacks import ModelSummary, RichModelSummary

from halluc_cl.train.summary import (
    LightningTip,
    ParameterSummary,
    summary_table,
    use_parameter_summary,
)


def test_table_keeps_counts_and_drops_flops_and_empty_rows():
    data = [(" ", ["0", "1"]), ("Name", ["accuracy", "student"]),
            ("Type", ["ModuleDict", "GPT2LMHeadModel"]), ("Params", ["0", "1.5 M"]),
            ("Mode", ["train", "train"]), ("FLOPs", ["0", "0"])]
    lines = summary_table(data, 1_500_000, 1_000_000, 6.0).splitlines()
    assert lines[0].split(" | ") == ["Name   ", "Type           ", "Params", "Mode"]
    assert lines[1].split(" | ") == ["student", "GPT2LMHeadModel", "1.5 M ", "train"]
    assert lines[2:] == ["Trainable params: 1.0 M", "Non-trainable params: 500 K",
                         "Total params: 1.5 M", "Total estimated model params size (MB): 6.00"]


def test_only_lightnings_default_summaries_are_replaced():
    class Mine(ModelSummary):
        pass

    mine = Mine(max_depth=3)
    callbacks = [ModelSummary(), mine, RichModelSummary()]
    use_parameter_summary(callbacks)
    assert [type(c) for c in callbacks] == [ParameterSummary, Mine, ParameterSummary]
    assert callbacks[1] is mine


def test_the_tip_filter_drops_only_tips():
    def record(msg):
        return logging.LogRecord("lightning", logging.INFO, __file__, 1, msg, None, None)

    tip = LightningTip()
    assert not tip.filter(record("💡 Tip: For seamless cloud logging, try installing x"))
    assert tip.filter(record("GPU available: False, used: False"))
