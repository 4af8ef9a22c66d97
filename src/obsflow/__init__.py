"""obsflow: move telescope data from where it is taken to where it is used, without losing a byte.

Two jobs: the online SDFITS filler (``obsflow.online``, ``obsflow.sdfits``) and the
two-hop data sync with its verification (``obsflow.transfer``, ``obsflow.verify``).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
