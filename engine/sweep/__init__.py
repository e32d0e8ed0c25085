"""Batch sweeps: many guests x settings in one command (``multifd-engine sweep``).

``spec`` reads a sweep file and expands it into jobs (validated before any
job starts), ``job`` runs one job and records its outcome, ``local`` and
``cluster`` run the jobs on this machine or on a Dask cluster (``node``:
one job in a process of its own on a node; ``outcome``: what both hand
back), ``report`` is the sweep report (kind ``sweep``) and its per-guest
comparison, ``plot`` draws time against bytes on the wire, and
``loopback`` starts a real Dask cluster on 127.0.0.1 for the tests and the
benchmark.
"""
