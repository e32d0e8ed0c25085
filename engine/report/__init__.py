"""Reports: the run report (``run``), its versioned JSON schema (``schema``),
the data behind the plots (``timeline``, ``page_sizes``), and the
``multifd-engine report`` views (``table``, ``plot``)."""
