"""The parts both commands share: the script (load, target, args), bins, errors and exit
statuses, files written whole.
"""
