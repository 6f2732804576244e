"""SEM core: the template, the search loop, engines, search backends and the cache.

Importing `sem` never imports torch or vLLM: engines are imported lazily by `sem.engines.build_engine`.
"""

__version__ = "0.1.0"
