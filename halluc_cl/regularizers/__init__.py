"""Regularizer plugins, chosen in YAML by ``class_path``."""

from halluc_cl.regularizers.base import Regularizer
from halluc_cl.regularizers.distill import KLSelfDistillation
from halluc_cl.regularizers.ewc import EWC
from halluc_cl.regularizers.freeze import Freeze
from halluc_cl.regularizers.l2 import L2ToAnchor
from halluc_cl.regularizers.lora import LoRA
from halluc_cl.regularizers.replay import ReplayLoss

__all__ = ["EWC", "Freeze", "KLSelfDistillation", "L2ToAnchor", "LoRA", "Regularizer", "ReplayLoss"]
