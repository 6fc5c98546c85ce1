"""Methods (``model.methods``), chosen in YAML by ``class_path``: penalties, transforms of
the model or its trainable set, and data-side options (DESIGN §5)."""

from halluc_cl.errors import deprecated
from halluc_cl.methods.base import ExtraOutputs, Method, StepOutputs
from halluc_cl.methods.context import FitContext, FitData
from halluc_cl.methods.distill import KLSelfDistillation
from halluc_cl.methods.ewc import EWC
from halluc_cl.methods.freeze import Freeze
from halluc_cl.methods.l2 import L2ToAnchor
from halluc_cl.methods.lora import LoRA
from halluc_cl.methods.replay import ReplayLoss

__all__ = ["EWC", "ExtraOutputs", "FitContext", "FitData", "Freeze", "KLSelfDistillation",
           "L2ToAnchor", "LoRA", "Method", "ReplayLoss", "StepOutputs"]


def __getattr__(name: str):
    """``Regularizer``, the former name of ``Method``, with a deprecation warning."""
    if name == "Regularizer":
        deprecated("halluc_cl.methods.Regularizer", "halluc_cl.methods.Method")
        return Method
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
