#!/usr/bin/env python3
"""A token login through imapgate with Python's imaplib.

usage: imaplib_oauth.py xoauth2|oauthbearer HOST PORT CAFILE USER TOKEN

It authenticates with AUTHENTICATE XOAUTH2 or OAUTHBEARER, the message
built by a callable as imaplib asks (no SASL-IR), answering an error
challenge with the mechanism's dummy response (XOAUTH2: an empty line,
OAUTHBEARER: %x01). On success it SELECTs INBOX and prints "AUTH OK",
"SELECT OK N" and "DONE"; on refusal it prints "CHALLENGE <json>" and
"AUTH NO <text>" and exits 2. Any other failure exits 1.
"""
import base64
import imaplib
import ssl
import sys

mech, host, port, cafile, user, token = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False  # the test certificate names localhost and 127.0.0.1

m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=20)
if "AUTH=" + mech.upper() not in m.capabilities:
    print("FAIL no AUTH=%s: %r" % (mech.upper(), m.capabilities), flush=True)
    sys.exit(1)

if mech == "xoauth2":
    message = "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
    dummy = b""
else:
    message = "n,a=%s,\x01host=%s\x01port=%s\x01auth=Bearer %s\x01\x01" % (user, host, port, token)
    dummy = b"\x01"

calls = []


def respond(challenge):
    calls.append(challenge)
    if len(calls) == 1:
        return message.encode()
    print("CHALLENGE", challenge.decode(), flush=True)
    return dummy


try:
    typ, _ = m.authenticate(mech.upper(), respond)
except imaplib.IMAP4.error as e:
    print("AUTH NO", e, flush=True)
    sys.exit(2)
if typ != "OK":
    print("FAIL authenticate: %s" % typ, flush=True)
    sys.exit(1)
print("AUTH OK", flush=True)
typ, data = m.select("INBOX")
if typ != "OK":
    print("FAIL select: %s %r" % (typ, data), flush=True)
    sys.exit(1)
print("SELECT OK", int(data[0]), flush=True)
m.logout()
print("DONE", flush=True)
