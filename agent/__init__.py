"""Active Synthesis: targeted synthetic data from a classifier's uncertainty.

Importing this package is cheap; heavy libraries (torch, transformers, faiss) load inside the stage
that needs them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
