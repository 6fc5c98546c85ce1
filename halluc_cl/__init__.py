"""halluc-cl: reproduce, measure and fix fine-tuning-induced hallucinations."""

__version__ = "0.2.0"
