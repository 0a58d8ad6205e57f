"""Store = the base (connection, schema, transactions, models) + one mixin per stage.

Each mixin lives in its own module and holds the named methods of one stage's tables:
    records.py       corpora, contexts, mining runs, unit stats, records       (mine/)
    explanations.py  explanations, scores                                     (explain/, score/, validate/)
    llm.py           llm_calls, llm_cache                                     (llm/)
    tasks.py         datasets, pairs, patch runs and results, head scores     (tasks/, patching/)
    jobs.py          batch jobs                                               (batch/)
    investigations.py  investigations, their steps and figures                (investigate/)
"""

from .base import StoreBase
from .explanations import ExplanationsMixin
from .investigations import InvestigationsMixin
from .jobs import JobsMixin
from .llm import LLMMixin
from .query import QueryMixin
from .records import RecordsMixin
from .tasks import TasksMixin


class Store(RecordsMixin, ExplanationsMixin, LLMMixin, TasksMixin, JobsMixin, InvestigationsMixin, QueryMixin, StoreBase):
    pass
