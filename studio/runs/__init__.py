"""Looking back at finished runs: the run index and its queries (history), re-opening
the pipeline inside an output (reopen, provenance), the gallery (report), a run's
outputs as a training set (dataset), measurements attached after the fact
(evaluations), and the step cache's upkeep (cache_admin)."""
