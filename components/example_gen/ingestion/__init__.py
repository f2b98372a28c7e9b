"""The parts of ImageExampleGen's executor (../executor.py), one idea per module.

    skips.py        why a file was not ingested (the reason codes of the report)
    data_folder.py  the files under data_root: layouts, class folders, a safe walk, reading
    inspection.py   one file's bytes -> ingested as is, converted, or refused with a reason
    report.py       the ingestion report: assembled, checked, summarised
    fingerprint.py  a driver whose input fingerprint covers every file of the folder tree
"""


class IngestionError(RuntimeError):
    """The data folder cannot produce a usable dataset; the message names what is wrong."""
