"""Regularizer plugins, chosen in YAML by ``class_path``."""

from halluc_cl.regularizers.base import Regularizer
from halluc_cl.regularizers.distill import KLSelfDistillation

__all__ = ["KLSelfDistillation", "Regularizer"]
