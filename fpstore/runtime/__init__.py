"""Infrastructure the operations run on.

Finding and checking files (:mod:`~fpstore.runtime.files`), fingerprinting workers in local processes
(:mod:`~fpstore.runtime.workers`) or on a dask cluster (:mod:`~fpstore.runtime.dask_workers`), the
configuration file (:mod:`~fpstore.runtime.config`) and how counts are worded
(:mod:`~fpstore.runtime.wording`).
"""
