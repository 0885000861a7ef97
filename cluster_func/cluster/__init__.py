"""cluf: submission of bins as jobs, the jobs' scripts and the run's manifest, status, waiting,
continuation past a walltime; one module per scheduler under ``schedulers``.
"""
