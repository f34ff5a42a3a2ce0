#!/usr/bin/env python3
"""Smoke test for tests/harness/mailservers.sh (stdlib only).

    python3 tests/harness/smoke.py DIR/env [OTHER_DIR/env] [--big]

Sends mail through the private Postfix (plain, plus address, STARTTLS, implicit
TLS + AUTH) and reads it back from the private Dovecot (STARTTLS and IMAPS,
certificate verified against CA_FILE for both "localhost" and "127.0.0.1").
With OTHER env: checks the message did not land in the other instance.
With --big: round-trips a 25 MB attachment.
"""
import email
import email.policy
import imaplib
import os
import smtplib
import ssl
import sys
import time
from email.message import EmailMessage


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = value
    return env


def tls(env):
    return ssl.create_default_context(cafile=env["CA_FILE"])  # verification on


def message(to, subject, body="hello"):
    m = EmailMessage()
    m["From"] = "alice@example.test"
    m["To"] = to
    m["Subject"] = subject
    m.set_content(body)
    return m


def subjects(imap):
    imap.select("INBOX", readonly=True)
    _, data = imap.search(None, "ALL")
    found = set()
    for num in data[0].split():
        _, d = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        found.add(email.message_from_bytes(d[0][1])["Subject"])
    return found


def wait_for(imap, want, timeout=10):
    deadline = time.time() + timeout
    while True:
        got = subjects(imap)
        if want <= got:
            return
        if time.time() > deadline:
            raise AssertionError(f"missing: {want - got}")
        time.sleep(0.1)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    big = "--big" in sys.argv
    env = load_env(args[0])
    other = load_env(args[1]) if len(args) > 1 else None
    tag = f"smoke-{os.getpid()}-{time.time():.0f}"
    smtp_port, smtps_port = int(env["SMTP_PORT"]), int(env["SMTPS_PORT"])
    imap_port, imaps_port = int(env["IMAP_PORT"]), int(env["IMAPS_PORT"])
    want = set()

    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.ehlo()
        assert s.has_extn("starttls"), "STARTTLS not offered"
        assert not s.has_extn("auth"), "AUTH offered before TLS"
        for to, sub in [("support@example.test", "plain"), ("support+abc123@example.test", "plus")]:
            s.send_message(message(to, f"{tag} {sub}"))
            want.add(f"{tag} {sub}")
        for bad in ["nobody@example.test", "someone@outside.example"]:
            try:
                s.send_message(message(bad, "x"))
                raise AssertionError(f"{bad} accepted")
            except smtplib.SMTPRecipientsRefused:
                pass
    with smtplib.SMTP("localhost", smtp_port) as s:
        s.starttls(context=tls(env))
        s.ehlo()
        assert s.has_extn("auth"), "AUTH not offered after STARTTLS"
        s.send_message(message("support@example.test", f"{tag} starttls"))
        want.add(f"{tag} starttls")
    for host in ("localhost", "127.0.0.1"):
        with smtplib.SMTP_SSL(host, smtps_port, context=tls(env)) as s:
            s.login("support", "secret")
            s.send_message(message("support@example.test", f"{tag} smtps {host}"))
            want.add(f"{tag} smtps {host}")
        with smtplib.SMTP_SSL(host, smtps_port, context=tls(env)) as s:
            try:
                s.login("support", "wrong")
                raise AssertionError("wrong password accepted")
            except smtplib.SMTPAuthenticationError:
                pass
    print(f"smtp ok ({time.time() - t0:.2f}s)")

    for host in ("localhost", "127.0.0.1"):
        imap = imaplib.IMAP4(host, imap_port)
        imap.starttls(ssl_context=tls(env))
        imap.login("support", "secret")
        wait_for(imap, want)
        imap.logout()
        imap = imaplib.IMAP4_SSL(host, imaps_port, ssl_context=tls(env))
        imap.login("support@example.test", "secret")
        _, caps = imap.capability()
        assert b"IDLE" in caps[0], caps
        wait_for(imap, want)
        imap.logout()
        print(f"imap starttls + imaps ok via {host}, IDLE announced")

    if big:
        t0 = time.time()
        data = os.urandom(25 * 1024 * 1024)
        m = message("support@example.test", f"{tag} big")
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename="big.bin")
        with smtplib.SMTP("127.0.0.1", smtp_port) as s:
            s.starttls(context=tls(env))
            s.send_message(m)
        imap = imaplib.IMAP4_SSL("localhost", imaps_port, ssl_context=tls(env))
        imap.login("support", "secret")
        wait_for(imap, {f"{tag} big"}, timeout=30)
        _, d = imap.search(None, "SUBJECT", f'"{tag} big"')
        _, f = imap.fetch(d[0].split()[-1], "(BODY.PEEK[])")
        got = email.message_from_bytes(f[0][1], policy=email.policy.default)
        assert next(got.iter_attachments()).get_payload(decode=True) == data
        imap.logout()
        print(f"25 MB attachment ok ({time.time() - t0:.2f}s)")

    if other:
        imap = imaplib.IMAP4("127.0.0.1", int(other["IMAP_PORT"]))
        imap.login("support", "secret")
        leaked = {s for s in subjects(imap) if s and s.startswith(tag)}
        assert not leaked, f"leaked into other instance: {leaked}"
        imap.logout()
        print("other instance untouched")
    print("SMOKE OK")


if __name__ == "__main__":
    main()
