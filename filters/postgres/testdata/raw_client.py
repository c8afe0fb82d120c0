#!/usr/bin/env python3
"""A minimal protocol-level client for what psql and pgbench never send.

Speaks protocol 3.2 at startup (the server answers NegotiateProtocolVersion),
then: named statements and portals, Execute with a row limit (PortalSuspended),
Describe, Close, Flush, a pipeline with an error in the middle (the server skips
to Sync), a FunctionCall, and Terminate.
Usage: raw_client.py <port>   (user postgres, database postgres, trust auth)
"""
import socket
import struct
import sys


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) + b"".join(struct.pack("!I", t) for t in types))


def bind(portal, stmt, params=(), fmts=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", len(fmts)) + b"".join(struct.pack("!h", f) for f in fmts)
    body += struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!h", 0))


def execute(portal, max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


SYNC, FLUSH = msg(b"S"), msg(b"H")


def read_until(sock, tag, count=1):
    """Reads messages until `count` with `tag` arrived."""
    buf = b""
    while True:
        while len(buf) >= 5:
            t, n = buf[0:1], struct.unpack("!i", buf[1:5])[0]
            if len(buf) < n + 1:
                break
            buf = buf[n + 1 :]
            if t == tag:
                count -= 1
                if count == 0:
                    assert not buf, "unexpected trailing data"
                    return
        data = sock.recv(65536)
        if not data:
            raise SystemExit("server closed")
        buf += data


def main():
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    params = cstr("user") + cstr("postgres") + cstr("database") + cstr("postgres")
    params += cstr("application_name") + cstr("raw-client") + cstr("_pq_.unknown_option") + cstr("1") + b"\0"
    body = struct.pack("!I", (3 << 16) | 2) + params
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    read_until(sock, b"Z")
    # Named statement, named portal, row limit: PortalSuspended twice, then completion.
    sock.sendall(
        parse("s1", "select g from generate_series(1, $1::int) g", [23])
        + describe(b"S", "s1")
        + bind("p1", "s1", [b"5"])
        + execute("p1", 2)
        + FLUSH
    )
    read_until(sock, b"s")
    sock.sendall(execute("p1", 2) + execute("p1", 2) + close(b"P", "p1") + SYNC)
    read_until(sock, b"Z")
    # Pipeline with an error in the middle: the third Execute is skipped.
    sock.sendall(
        parse("", "select $1::int + 1")
        + bind("", "", [b"41"])
        + execute("")
        + bind("", "s1", [b"x"])
        + execute("")
        + bind("", "", [b"1"])
        + execute("")
        + SYNC
        + bind("", "s1", [struct.pack("!i", 3)], [1])
        + describe(b"P", "")
        + execute("")
        + close(b"S", "s1")
        + SYNC
    )
    read_until(sock, b"Z", 2)
    # FunctionCall: int4abs(-7), OID 1251.
    # oid, 1 format code (binary), 1 argument of 4 bytes, text result.
    sock.sendall(msg(b"F", struct.pack("!Ihhhiih", 1251, 1, 1, 1, 4, -7, 0)))
    read_until(sock, b"Z")
    sock.sendall(msg(b"X"))
    sock.close()


main()
