"""Running a plan on a Ray cluster (`studio run --executor ray`).

The driver (this process) does everything the local executor does except calling the
generators: it validates and plans, resolves inputs, looks up the step cache, writes every
artifact, the cache, the journal and the manifest. Only cache misses travel, one batch of
one step per Ray call, to long-lived worker actors that load the plugins once, keep their
models loaded across batches and steps, and call `studio.execute.batch.run_batch` there. Inputs
made upstream go to the workers through Ray's object store (once per file), and outputs
come back the same way: one process writes the run directory, so there are no races on
shared files, and the outputs are the same bytes as a local run's.

A step starts as soon as the steps it reads from have finished; independent steps and the
batches of a step run at the same time, as many as the cluster has room for. Workers are
pooled per (generator, precision): a pool grows while there is room, and an idle worker
of another pool makes room when there is none. A worker that dies mid-batch is restarted
and the batch retried by Ray; a batch that runs out of memory is split in two, as locally.

Workers outlive the run that started them (Ray "detached" actors, named in the `studio`
namespace after what they were made for), so the next run on the same cluster finds its
models loaded: starting a worker and loading its models costs seconds, dispatching a
batch to a warm one about a millisecond. A worker idle for `keep_workers` seconds stops
itself and frees its CPU or GPU; workers left by another Studio setup (other versions,
plugins or thread count) are stopped by the next run that finds them idle.

Ray is imported only in this package, and this package only when `--executor ray` is
asked for. Its modules, each with one job:

- `address`: the address checks, the reachability probe and `connect`;
- `output`: Ray's messages for the driver held for RUN/ray.log (`write_ray_log`);
- `worker`: the worker actor and the `Job`/`Part`/`Done` messages it trades;
- `pools`: the worker actors pooled by generator and precision, kept across runs;
- `runtime`: the driver's view of the workers' device and precision;
- `scheduler`: `RayScheduler`, which the executor is given in place of the local one
  (`RayExecutor` is an `Executor` with it; see studio.execute.scheduling for the seam).
"""

from studio.execute.cluster.address import (ADDRESS_HELP, PROBE_S, RAY_MISSING, check_address, connect, import_ray,
                                    resolve_address)
from studio.execute.cluster.output import OUTPUT, RAY_LOG, RayOutput, hold_ray_output, release_ray_output, write_ray_log
from studio.execute.cluster.pools import KEEP_WORKERS_S, NAMESPACE, RETRIES
from studio.execute.cluster.runtime import ClusterRuntime
from studio.execute.cluster.scheduler import RayExecutor, RayScheduler
from studio.execute.cluster.worker import Done, Job, Part, Worker, versions

__all__ = ["ADDRESS_HELP", "KEEP_WORKERS_S", "NAMESPACE", "OUTPUT", "PROBE_S", "RAY_LOG", "RAY_MISSING", "RETRIES",
           "ClusterRuntime", "Done", "Job", "Part", "RayExecutor", "RayOutput", "RayScheduler", "Worker",
           "check_address", "connect", "hold_ray_output", "import_ray", "release_ray_output", "resolve_address",
           "versions", "write_ray_log"]
