"""The weight-sharing supernet, the extraction of standalone subnets from it, and the sharing
mechanisms beside it: few-shot sub-supernets and importance-sorted widths."""

from nas.supernet.few_shot import FewShotSupernet, split_keys
from nas.supernet.importance import sort_by_importance
from nas.supernet.supernet import SHARING, Supernet

__all__ = ["SHARING", "FewShotSupernet", "Supernet", "sort_by_importance", "split_keys"]
