"""clum: a run on this machine. ``run`` is the workflow (script to exit status), ``runner``
the loop over the worker pool, ``worker`` the worker process, ``reporter`` and ``relay`` what
the user sees.
"""
