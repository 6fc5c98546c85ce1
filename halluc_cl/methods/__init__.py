"""Regularizer plugins, chosen in YAML by ``class_path``."""

from halluc_cl.methods.base import ExtraOutputs, Regularizer, StepOutputs
from halluc_cl.methods.distill import KLSelfDistillation
from halluc_cl.methods.ewc import EWC
from halluc_cl.methods.freeze import Freeze
from halluc_cl.methods.l2 import L2ToAnchor
from halluc_cl.methods.lora import LoRA
from halluc_cl.methods.replay import ReplayLoss

__all__ = ["EWC", "ExtraOutputs", "Freeze", "KLSelfDistillation", "L2ToAnchor", "LoRA", "Regularizer",
           "ReplayLoss", "StepOutputs"]
