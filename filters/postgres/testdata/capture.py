#!/usr/bin/env python3
"""Record PostgreSQL wire traffic as test vectors.

Listens on LISTEN_PORT, relays every connection to the server on SERVER_PORT and
writes the two byte streams of connection N as
  <prefix>.<N>.fe.bin  (frontend: client -> server)
  <prefix>.<N>.be.bin  (backend:  server -> client)
  <prefix>.<N>.log     both directions interleaved in arrival order, each read as
                       one record: b"F" or b"B", a 4-byte big-endian length, the bytes
Usage: capture.py <prefix> <listen_port> <server_port>
Stop it with SIGTERM once the client has finished.
"""
import socket
import sys
import threading

prefix, listen_port, server_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def pump(src, dst, out, log, lock, marker):
    with open(out, "wb") as f:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            f.write(data)
            f.flush()
            with lock:
                log.write(marker + len(data).to_bytes(4, "big") + data)
                log.flush()
            dst.sendall(data)


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(16)
    n = 0
    while True:
        client, _ = listener.accept()
        n += 1
        server = socket.create_connection(("127.0.0.1", server_port))
        log, lock = open(f"{prefix}.{n}.log", "wb"), threading.Lock()
        for src, dst, side, marker in ((client, server, "fe", b"F"), (server, client, "be", b"B")):
            threading.Thread(
                target=pump,
                args=(src, dst, f"{prefix}.{n}.{side}.bin", log, lock, marker),
                daemon=True,
            ).start()


main()
