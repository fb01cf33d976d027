"""MPI ping-pong between rank 0 and rank 1 (run by bench/mpi_pingpong.py inside a job)."""

import json
import socket
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
peer = 1 - rank


def pingpong(nbytes: int, iters: int) -> float:
    buf = bytearray(nbytes)
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(iters):
        if rank == 0:
            comm.Send([buf, MPI.BYTE], dest=peer)
            comm.Recv([buf, MPI.BYTE], source=peer)
        else:
            comm.Recv([buf, MPI.BYTE], source=peer)
            comm.Send([buf, MPI.BYTE], dest=peer)
    return (time.perf_counter() - start) / iters / 2  # one-way


pingpong(0, 1000)  # warm up
latency = min(pingpong(0, 5000) for _ in range(3))
size = 4 * 1024 * 1024
pingpong(size, 5)
one_way = min(pingpong(size, 40) for _ in range(3))
hosts = comm.gather(socket.gethostname(), root=0)
if rank == 0:
    print(json.dumps({"hosts": hosts, "latency_us": round(latency * 1e6, 2),
                      "bandwidth_GBps": round(size / one_way / 1e9, 3)}))
