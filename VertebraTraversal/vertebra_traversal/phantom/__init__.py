"""Synthetic spine CT/MR generator: the project's training set, test bed and demo data.

Analytic anatomy (C1-L5 with transitional variants, sacrum, pelvis, ribs, organs) rendered with
partial-volume edges on a scanner grid, with VerSe-compatible labels and per-vertebra completeness
(paper §3.5, §4.1). See :func:`generate_case` and :func:`generate_dataset`.
"""
from .config import PhantomConfig
from .generator import Phantom, generate_case, generate_dataset
from .stats import format_stats, vertebra_stats

__all__ = ["PhantomConfig", "Phantom", "generate_case", "generate_dataset", "vertebra_stats", "format_stats"]
