"""The former name of ``halluc_cl.methods``: configs written for it still load
(``class_path: halluc_cl.regularizers.KLSelfDistillation``), with a deprecation warning; it
is removed in 0.3.0."""

from halluc_cl.errors import deprecated
from halluc_cl.methods import (  # noqa: F401
    EWC,
    Freeze,
    KLSelfDistillation,
    L2ToAnchor,
    LoRA,
    Method,
    ReplayLoss,
)

deprecated("the package halluc_cl.regularizers", "halluc_cl.methods", stacklevel=2)
Regularizer = Method  # the former name of the base class
