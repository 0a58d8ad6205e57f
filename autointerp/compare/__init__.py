"""Model diff science: two models on the same text, tasks and components.

    blackbox     per-token (same tokenizer) or per-span (different tokenizers) Δ log p, Δ p,
                 Δ max(-5, log p), KL(A||B); top differing contexts as ActivationRecords
    spans        the character spans two tokenisations share
    tasks        built-in tasks on both models: logit difference, accuracy, outliers
    components   weights, activations (attention JS, head outputs, neuron correlations), DLA and
                 patching differences (same architecture only)
    plant        a planted difference (heads' outputs zeroed, saved as model B) for validation
    plot         a PNG of a diff (the top contexts' Δ and every component ranking)

A stage of its own (not patching/ or score/): it reads two models at once, which no other stage
does, and it composes models/, corpus/, tasks/ and patching/ (DLA's frozen-norm direction) in
one direction only. The diff pipeline (pipeline/diff.py, `autointerp diff`) runs it, explains its
records with the explain pipeline and stores it; there is no second diff package.
"""

from .blackbox import (METRICS, RANKS, SIDES, BlackBoxResult, blackbox_diff, is_repeat_context, repeated_token_flags,
                       same_tokenizer)
from .components import activation_diff, check_same_architecture, dla_diff, patch_diff, weight_diff
from .plant import Planted, plant_heads, save_model, strongest_heads, zero_head_outputs
from .spans import Span, common_spans, span_sums
from .tasks import TaskDiff, check_tasks, compare_task

__all__ = ["METRICS", "RANKS", "SIDES", "BlackBoxResult", "blackbox_diff", "is_repeat_context", "repeated_token_flags",
           "same_tokenizer", "activation_diff", "check_same_architecture", "dla_diff", "patch_diff", "weight_diff",
           "Planted", "plant_heads", "save_model", "strongest_heads", "zero_head_outputs", "Span", "common_spans", "span_sums", "TaskDiff",
           "check_tasks", "compare_task"]
