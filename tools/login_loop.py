#!/usr/bin/env python3
# Loops `login` on one telnet connection for DURATION seconds; prints logins/s.
import socket, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rwb")
def cmd(line):
    f.write((line + "\n").encode()); f.flush()
    while True:
        l = f.readline().decode()
        if not l: raise SystemExit("closed")
        if l.split(" ")[0] in ("ack", "err", "end"): return l.strip()
print(cmd("register bench s3cret-pw"))
n, start = 0, time.time()
while time.time() - start < duration:
    r = cmd("login bench s3cret-pw")
    assert r == "ack logged in as bench", r
    n += 1
print(f"{n} logins in {time.time()-start:.1f} s: {n/(time.time()-start):.1f}/s")
