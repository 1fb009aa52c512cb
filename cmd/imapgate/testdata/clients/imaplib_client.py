#!/usr/bin/env python3
"""A real mail client session through imapgate, with Python's imaplib.

usage: imaplib_client.py implicit|starttls HOST PORT CAFILE USER PASSWORD

It authenticates with AUTHENTICATE PLAIN, SELECTs INBOX, APPENDs a message
(a literal), FETCHes it back and compares, then IDLEs: it prints "IDLING"
and waits for the test to deliver a message from another connection, and
exits 0 only when the IDLE saw the new message. Every step prints one line;
any failure exits 1 with the reason.
"""
import imaplib
import ssl
import sys
import time

mode, host, port, cafile, user, password = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False  # the test certificate names localhost and 127.0.0.1


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


if mode == "implicit":
    m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=20)
else:
    m = imaplib.IMAP4(host, int(port), timeout=20)
    if "LOGINDISABLED" not in m.capabilities:
        fail("no LOGINDISABLED before TLS: %r" % (m.capabilities,))
    m.starttls(ssl_context=ctx)
if "AUTH=PLAIN" not in m.capabilities:
    fail("no AUTH=PLAIN: %r" % (m.capabilities,))
typ, _ = m.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (user, password)).encode())
if typ != "OK":
    fail("authenticate: %s" % typ)
print("AUTH OK", flush=True)

typ, data = m.select("INBOX")
if typ != "OK":
    fail("select: %s %r" % (typ, data))
before = int(data[0])
print("SELECT OK", before, flush=True)

body = ("From: py@imapgate.test\r\nTo: %s@imapgate.test\r\nSubject: appended by imaplib\r\n"
        "Message-ID: <imaplib-%d@imapgate.test>\r\n\r\n%s\r\n" % (user, time.time_ns(), "line\r\n" * 200))
typ, data = m.append("INBOX", None, None, body.encode())
if typ != "OK":
    fail("append: %s %r" % (typ, data))
typ, data = m.select("INBOX")
count = int(data[0])
if count != before + 1:
    fail("append did not add a message: %d -> %d" % (before, count))
typ, data = m.fetch(str(count), "(BODY.PEEK[])")
if typ != "OK" or data[0][1] != body.encode():
    fail("fetched message differs from the appended one")
print("APPEND+FETCH OK", flush=True)

# IDLE (imaplib has no idle() before Python 3.14): speak it directly.
tag = m._new_tag().decode()
m.send(("%s IDLE\r\n" % tag).encode())
line = m.readline()
if not line.startswith(b"+"):
    fail("IDLE not accepted: %r" % line)
print("IDLING", flush=True)
deadline = time.time() + 20
seen = False
m.sock.settimeout(20)
while time.time() < deadline:
    line = m.readline()
    if not line:
        fail("connection closed during IDLE")
    if line.startswith(b"*") and line.rstrip().endswith(b"EXISTS"):
        seen = True
        break
if not seen:
    fail("IDLE saw no new message")
m.send(b"DONE\r\n")
while True:
    line = m.readline()
    if line.startswith(tag.encode()):
        if b" OK" not in line:
            fail("IDLE ended badly: %r" % line)
        break
print("IDLE OK", line.decode().strip(), flush=True)
m.logout()
print("DONE", flush=True)
