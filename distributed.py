"""The distributed handle: the one interface through which training code talks to other ranks.

Library code (optimization, input pipeline, runner) never imports Horovod. It receives a handle
and uses only the contract below; `SingleProcess` is the handle for a run on one process and
`Horovod` (this is the only module that imports `horovod`) the handle of a data-parallel run
launched with `mpiexec`/`mpirun` or `horovodrun`. `create` picks one.

Contract of a handle:
  rank, size, local_rank   ints: this process's global rank, the number of ranks, and the rank
                           within its machine (used to pin a device).
  local_size               int: ranks on this machine (they share its cores).
  is_chief                 True on exactly one rank (rank 0): it loads the init checkpoint,
                           saves, logs and evaluates.
  allreduce(tensor, name)  a graph tensor holding the average of `tensor` over all ranks, same
                           shape and dtype. Every rank must build the same allreduces in the same
                           order. A Horovod implementation may compress to fp16 on the wire.
  allreduce_gradients(gs)  `allreduce` applied to each tensor of a list; None entries (variables
                           without a gradient) stay None and are not communicated.
  training_hooks()         SessionRunHooks every rank adds to its training session (Horovod: the
                           broadcast of rank 0's variables after restore or initialisation).
"""

import os

import tensorflow as tf


class SingleProcess:
    """The handle for a run on one process: rank 0 of 1, every allreduce is the identity."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    is_chief = True

    def allreduce(self, tensor, name=None):
        """Return the average of `tensor` over the one rank: `tensor` itself."""
        del name  # Only a Horovod implementation names its collective ops.
        return tensor

    def allreduce_gradients(self, grads):
        """Return `[allreduce(g) for g in grads]`, passing None entries through."""
        return [None if g is None else self.allreduce(g) for g in grads]

    def training_hooks(self):
        """No hooks: a single process has nothing to synchronise."""
        return []


class Horovod(SingleProcess):
    """The handle of one rank of a Horovod job (MPI or Gloo); calls `hvd.init()`.

    Args:
      fp16_compression: cast float32 tensors to float16 for the allreduce (half the bytes on
        the wire), back to float32 after.
    """

    def __init__(self, fp16_compression=False):
        import horovod.tensorflow as hvd  # only a --horovod run needs (and pays for) Horovod

        # Open MPI's waits busy-poll a core by default. Under Horovod they run beside the
        # training threads on the same cores and slow them down (CPU training scales far worse
        # with polling: BENCHMARKS.md, Horovod scaling). Read at MPI_Init; a user's value wins.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        hvd.init()
        self._hvd = hvd
        self._compression = hvd.Compression.fp16 if fp16_compression else hvd.Compression.none
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        self.is_chief = self.rank == 0

    def allreduce(self, tensor, name=None):
        """The average of `tensor` over all ranks (Horovod allreduce, fp16 on the wire if set)."""
        return self._hvd.allreduce(tensor, op=self._hvd.Average, compression=self._compression,
                                   name=name)

    def training_hooks(self):
        """The broadcast of rank 0's variables, so that every rank starts from the same state."""
        return [BroadcastVariablesHook(self._hvd)]


class BroadcastVariablesHook(tf.compat.v1.train.SessionRunHook):
    """Sets every global variable of every rank to rank 0's values once the session exists.

    Runs after the chief restored its checkpoint or warm-started, so a resumed run continues on
    all ranks from the checkpoint (`hvd.BroadcastGlobalVariablesHook` needed tf.estimator and is
    not in Horovod builds for TF 2.21).
    """

    def __init__(self, hvd, root_rank=0):
        self._hvd = hvd
        self._root_rank = root_rank

    def begin(self):
        self._broadcast = self._hvd.broadcast_global_variables(self._root_rank)

    def after_create_session(self, session, coord):
        session.run(self._broadcast)


def create(use_horovod, fp16_compression=False):
    """The handle of this process: `Horovod(fp16_compression)` or `SingleProcess()`."""
    if use_horovod:
        return Horovod(fp16_compression)
    return SingleProcess()
