"""Plain TCP ping-pong over the cluster bridge: `server PORT` on one node, `client HOST PORT`
on another (run by bench/mpi_pingpong.py through `cloudhpc exec`)."""

import json
import socket
import sys
import time


def serve(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as srv:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(1):
            conn.sendall(data)


def client(host: str, port: int, iters: int = 5000) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            conn = socket.create_connection((host, port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(200):
        conn.sendall(b"x")
        conn.recv(1)
    start = time.perf_counter()
    for _ in range(iters):
        conn.sendall(b"x")
        conn.recv(1)
    one_way = (time.perf_counter() - start) / iters / 2
    conn.close()
    print(json.dumps({"tcp_latency_us": round(one_way * 1e6, 2)}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
