"""Running a checked plan: the executor owns the run folder, the items' inputs and
outputs, the step cache, the journal and the manifest; a scheduler decides what runs
next and where (in this process: scheduling.LocalScheduler; on a Ray cluster:
cluster.RayScheduler); batch calls the generators; runtime holds the device, the
precision and the loaded models; artifacts writes the files."""
