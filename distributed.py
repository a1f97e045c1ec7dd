"""The distributed handle: the one interface through which training code talks to other ranks.

Library code (optimization, input pipeline, runner) never imports Horovod. It receives a handle
and uses only the contract below; `SingleProcess` is the handle for a run on one process, and a
Horovod-backed class (added later, the only module allowed to import `horovod`) implements the
same contract with `hvd.rank()`, `hvd.size()`, `hvd.local_rank()` and `hvd.allreduce`.

Contract of a handle:
  rank, size, local_rank   ints: this process's global rank, the number of ranks, and the rank
                           within its machine (used to pin a device).
  is_chief                 True on exactly one rank (rank 0): it loads the init checkpoint,
                           saves, logs and evaluates.
  allreduce(tensor, name)  a graph tensor holding the average of `tensor` over all ranks, same
                           shape and dtype. Every rank must build the same allreduces in the same
                           order. A Horovod implementation may compress to fp16 on the wire.
  allreduce_gradients(gs)  `allreduce` applied to each tensor of a list; None entries (variables
                           without a gradient) stay None and are not communicated.
"""


class SingleProcess:
    """The handle for a run on one process: rank 0 of 1, every allreduce is the identity."""

    rank = 0
    size = 1
    local_rank = 0
    is_chief = True

    def allreduce(self, tensor, name=None):
        """Return the average of `tensor` over the one rank: `tensor` itself."""
        del name  # Only a Horovod implementation names its collective ops.
        return tensor

    def allreduce_gradients(self, grads):
        """Return `[allreduce(g) for g in grads]`, passing None entries through."""
        return [None if g is None else self.allreduce(g) for g in grads]
