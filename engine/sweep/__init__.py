"""Batch sweeps: many guests x settings in one command (``multifd-engine sweep``).

``spec`` reads a sweep file and expands it into jobs (validated before any
job starts), ``job`` runs one job and records its outcome, ``local`` and
``cluster`` run the jobs on this machine or on a Dask cluster, ``report``
is the sweep report (kind ``sweep``) and its per-guest comparison, ``plot``
draws time against bytes on the wire.
"""
