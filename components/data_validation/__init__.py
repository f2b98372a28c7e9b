"""Data checked before it trains: the schema, and drift against the previous successful run.

    spec.py       the thresholds and the mode (block, warn, off), from the config
    baseline.py   the statistics of the previous successful run, kept in a folder (no ML Metadata)
    checks.py     TFDV's checks per split and per class, turned into findings a person can act on
    component.py  DataValidator (before Transform) and RecordDataBaseline (the run's last step)
"""
