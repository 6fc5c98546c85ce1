"""The former name of ``halluc_cl.methods``, kept so that configs written for it still load
(``class_path: halluc_cl.regularizers.KLSelfDistillation``)."""

from halluc_cl.methods import (  # noqa: F401
    EWC,
    Freeze,
    KLSelfDistillation,
    L2ToAnchor,
    LoRA,
    Regularizer,
    ReplayLoss,
)
