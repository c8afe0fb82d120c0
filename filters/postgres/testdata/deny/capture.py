#!/usr/bin/env python3
"""Records what PostgreSQL answers to the messages gatehouse sends for a denied
statement (the raising DO block), for the engine's tests.

Usage: capture.py <port>   (user postgres, database postgres, trust auth)
Writes <scenario>.fe.bin (what the gateway sends the server, after login) and
<scenario>.be.bin (what the server answered) next to this script.
"""
import os
import socket
import struct
import sys

MESSAGE = "gatehouse: DROP is not allowed"
DETAIL = "denied by gatehouse rule no-drop"
BLOCK = ("DO $gh$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', "
         "MESSAGE = E'" + MESSAGE + "', DETAIL = E'" + DETAIL + "'; END$gh$")
PRIVATE = "\x01gatehouse_denied"


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def query(sql):
    return msg(b"Q", cstr(sql))


def parse(name, sql):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0))


def bind(portal, stmt):
    return msg(b"B", cstr(portal) + cstr(stmt) + struct.pack("!hhh", 0, 0, 0))


def execute(portal):
    return msg(b"E", cstr(portal) + struct.pack("!i", 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


SYNC, FLUSH = msg(b"S"), msg(b"H")


def read_messages(sock, ready_count):
    """Reads until `ready_count` ReadyForQuery messages arrived; returns the bytes."""
    buf = b""
    seen = 0
    out = b""
    while seen < ready_count:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed")
        buf += chunk
        while len(buf) >= 5:
            tag, n = buf[0:1], struct.unpack("!i", buf[1:5])[0]
            if len(buf) < n + 1:
                break
            out += buf[: n + 1]
            buf = buf[n + 1:]
            if tag == b"Z":
                seen += 1
    return out


def session(port):
    sock = socket.create_connection(("127.0.0.1", port))
    params = cstr("user") + cstr("postgres") + cstr("database") + cstr("postgres") + b"\0"
    body = struct.pack("!i", 3 << 16) + params
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    read_messages(sock, 1)
    return sock


SCENARIOS = {
    # A denied simple Query, then an allowed one.
    "simple": [query(BLOCK), query("select 1")],
    # Inside BEGIN: the denial aborts the block until ROLLBACK.
    "in_transaction": [query("BEGIN"), query(BLOCK), query("select 1"), query("ROLLBACK")],
    # Parse/Bind/Describe portal/Execute/Sync of a denied statement, then an allowed one.
    "extended": [
        parse("s1", BLOCK) + bind("", "s1") + describe(b"P", "") + execute("") + SYNC,
        parse("", "select 1") + bind("", "") + execute("") + SYNC,
    ],
    # Describe of a denied statement becomes Bind + Execute of the private portal;
    # twice in one transaction (rolled back to a savepoint in between).
    "describe": [
        query("BEGIN"),
        query("SAVEPOINT a"),
        parse("s2", BLOCK) + bind(PRIVATE, "s2") + execute(PRIVATE) + FLUSH + SYNC,
        query("ROLLBACK TO SAVEPOINT a"),
        bind(PRIVATE, "s2") + execute(PRIVATE) + SYNC,
        query("ROLLBACK"),
        bind(PRIVATE, "s2") + execute(PRIVATE) + SYNC,
    ],
}


def main():
    port = int(sys.argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    for name, steps in SCENARIOS.items():
        sock = session(port)
        fe, be = b"", b""
        for step in steps:
            sock.sendall(step)
            fe += step
            be += read_messages(sock, step.count(b"S\0\0\0\x04") + step.count(b"Q\0"))
        sock.sendall(msg(b"X"))
        sock.close()
        with open(os.path.join(here, name + ".fe.bin"), "wb") as f:
            f.write(fe)
        with open(os.path.join(here, name + ".be.bin"), "wb") as f:
            f.write(be)


if __name__ == "__main__":
    main()
