"""Store = the base (connection, schema, transactions, models) + one mixin per stage.

Each mixin lives in its own module and holds the named methods of one stage's tables:
    records.py       corpora, contexts, mining runs, unit stats, records       (mine/)
    explanations.py  explanations, scores                                     (explain/, score/, validate/)
    llm.py           llm_calls, llm_cache                                     (llm/)
    tasks.py         datasets, pairs, patch runs and results, head scores     (tasks/, patching/)
    jobs.py          batch jobs                                               (batch/)
    investigations.py  investigations, their steps and figures                (investigate/)
    diffs.py         model diffs: contexts, components, tasks, explanations     (compare/, diff/)
    circuits.py      edge-level circuits and their scored edges               (patching/edge_search.py)
    saes.py          SAEs and transcoders whose latents are units             (models/sae.py)
    graphs.py        attribution graphs, their nodes and kept edges           (graph/)
"""

from .base import StoreBase
from .diffs import DiffsMixin
from .circuits import CircuitsMixin
from .graphs import GraphsMixin
from .explanations import ExplanationsMixin
from .investigations import InvestigationsMixin
from .jobs import JobsMixin
from .llm import LLMMixin
from .query import QueryMixin
from .records import RecordsMixin
from .saes import SAEsMixin
from .tasks import TasksMixin


class Store(RecordsMixin, ExplanationsMixin, LLMMixin, TasksMixin, JobsMixin, InvestigationsMixin, QueryMixin, SAEsMixin,
            CircuitsMixin, DiffsMixin, GraphsMixin, StoreBase):
    pass
