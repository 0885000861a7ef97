"""``python -m cluster_func ...`` is ``clum ...`` (what cluf's job scripts run)."""

from .cli import clum_main

if __name__ == "__main__":
    clum_main()
