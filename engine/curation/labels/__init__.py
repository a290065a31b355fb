"""Label aggregation: one class per method, one API (crowd-kit's, without pandas).

Build :class:`Annotations` from (task, worker, label) records, ``fit`` a method, read
``labels_``, ``probas_`` and ``skills_``. Pairwise preferences go through
:class:`Comparisons` and :class:`BradleyTerry`.
"""

from .annotations import Annotations, Id, LabelError
from .base import Aggregator, ClassProbabilities
from .bradley_terry import BradleyTerry, Comparisons
from .dawid_skene import DawidSkene
from .glad import GLAD
from .majority_vote import MajorityVote
from .one_coin import OneCoinDawidSkene

__all__ = [
    "GLAD",
    "Aggregator",
    "Annotations",
    "BradleyTerry",
    "ClassProbabilities",
    "Comparisons",
    "DawidSkene",
    "Id",
    "LabelError",
    "MajorityVote",
    "OneCoinDawidSkene",
]
