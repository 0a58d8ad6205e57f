"""Batch: explain and score every unit of a model, unattended, restartable, shardable.

    from autointerp.batch import BatchOptions, run_batch, plan_batch
    s = run_batch("store/autointerp.db", BatchOptions(model="smollm2-135m", layers="0-3"))
    print(s.done, s.failed, s.scores)

plan.py (units, job keys, what is to do), runner.py (claims, workers, progress, summary),
estimate.py (the dry run's token estimate). The per-unit work is explain.explain_exemplars.
"""

from .plan import BatchOptions, parse_shard
from .runner import BatchSummary, plan_batch, run_batch

__all__ = ["BatchOptions", "BatchSummary", "run_batch", "plan_batch", "parse_shard"]
