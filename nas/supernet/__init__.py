"""The weight-sharing supernet and the extraction of standalone subnets from it."""
from nas.supernet.supernet import SHARING, Supernet

__all__ = ["SHARING", "Supernet"]
