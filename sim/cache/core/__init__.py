"""The compiled cache core: store accounting, K selection and holes, admission and the FIFO/LRU/LFU/LCBFU/LCBFU-DA
keys in numba, driven by a CacheSpec and called by both executors (sim/cache/core/cache.py).

Importing this package imports no numba: ``support`` says which specs the core carries out, ``cache`` (which
compiles) is imported only by a run that uses it.
"""
