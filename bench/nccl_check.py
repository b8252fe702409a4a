"""The NCCL path of nnscratch.distributed, on one GPU as one rank (the GPU one-shot's step).

    python bench/nccl_check.py        # on a GPU machine with CuPy and mpi4py

Several GPUs are needed to test data parallelism on GPUs for real; with one, this runs
the plumbing: MPI hands NCCL its unique identifier, NCCL sums the model's flat ∇θ and
broadcasts θ in place on the GPU (with one rank, the sum is the array itself, and the
broadcast leaves θ as it is), and the step's helper scales and sums ∇θ. It checks the
results, and times an all-reduce of ∇θ.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import nnscratch as nn


def main() -> int:
    try:
        import cupy
        from mpi4py import MPI
    except ImportError as exc:
        print(f"skipped: the NCCL check needs CuPy and mpi4py ({exc})")
        return 0
    try:
        nn.use_backend("cupy")
    except nn.BackendError as exc:
        print(f"skipped: {exc}")
        return 0
    from nnscratch.distributed import MPICommunicator, broadcast_parameters, sum_gradients

    comm = MPICommunicator(MPI.COMM_WORLD, MPI)
    nn.seed(0)
    params = nn.mlp([784, 256, 128, 10]).parameters()
    vector = params.vector
    rng = np.random.default_rng(0)
    vector.grad[...] = cupy.asarray(rng.normal(size=vector.grad.shape).astype(np.float32))
    for index, param in enumerate(params):  # every window has its gradient (as after a
        param.grad = vector.window(vector.grad, index)  # backward): ∇θ is one array
    gradient, theta = cupy.asnumpy(vector.grad), cupy.asnumpy(vector.value)

    comm.allreduce_(vector.grad)  # NCCL, one rank: the sum of one array is itself
    assert np.array_equal(cupy.asnumpy(vector.grad), gradient), "NCCL all-reduce changed ∇θ"
    broadcast_parameters(comm, params)
    assert np.array_equal(cupy.asnumpy(vector.value), theta), "NCCL broadcast changed θ"
    sum_gradients(comm, params, 0.5)  # the step's own call: ∇θ ← Σ_r ½ ∇θ_r
    assert np.allclose(cupy.asnumpy(vector.grad), gradient * 0.5), "the scaled sum is wrong"

    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(100):
        comm.allreduce_(vector.grad)
    cupy.cuda.Device().synchronize()
    seconds = (time.perf_counter() - start) / 100
    print(f"NCCL on {cupy.cuda.runtime.getDeviceProperties(0)['name']!s}: all-reduce and "
          f"broadcast of θ ({vector.value.shape[0]:,} float32) correct with one rank; "
          f"all-reduce {seconds * 1e6:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
