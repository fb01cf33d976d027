#!/bin/bash
#SBATCH --job-name=mpi-pi
# Computes pi by the midpoint rule across MPI ranks on several nodes, and prints the host
# of every rank. Checkable: the result must match pi to 10 decimals.
#   cloudhpc submit examples/jobs/mpi_pi.sh --nodes 2 --ntasks-per-node 2 --wait
read -r -d '' PROGRAM <<'PY'
import math, socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
n = 10_000_000
h = 1.0 / n
part = sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(rank, n, size)) * h
pi = comm.reduce(part, op=MPI.SUM, root=0)
hosts = comm.gather(socket.gethostname(), root=0)
if rank == 0:
    for r, host in enumerate(hosts):
        print(f"rank {r} of {size} on {host}")
    print(f"pi = {pi:.12f}  error = {abs(pi - math.pi):.2e}")
    print("CHECK", "OK" if abs(pi - math.pi) < 1e-10 else "FAILED")
PY
mpirun python3 -c "$PROGRAM"
