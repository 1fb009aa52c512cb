package proxytest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// messageEpoch is the Date of message 0; message n is n minutes later.
var messageEpoch = time.Date(2024, time.March, 4, 9, 30, 0, 0, time.FixedZone("CET", 3600))

// MakeMessage returns message number seq, of about size bytes (never less
// than its headers), as a client would find it: Received, Date, From, To,
// Subject, a Message-ID unique to this call, MIME headers and a plain text
// body. Lines end in CRLF, as IMAP APPEND wants them.
func MakeMessage(seq, size int) []byte {
	return makeMessage(seq, size, "\r\n")
}

func makeMessage(seq, size int, eol string) []byte {
	var token [6]byte
	rand.Read(token[:])
	date := messageEpoch.Add(time.Duration(seq) * time.Minute).Format(time.RFC1123Z)
	id := fmt.Sprintf("<%d.%s@proxytest.example.org>", seq, hex.EncodeToString(token[:]))
	headers := []string{
		"Return-Path: <sender" + fmt.Sprint(seq%7) + "@example.org>",
		"Received: from mx.example.org (mx.example.org [192.0.2.25])",
		"\tby imap.example.net (Postfix) with ESMTPS id " + strings.ToUpper(hex.EncodeToString(token[:5])),
		"\tfor <user1@example.net>; " + date,
		"Date: " + date,
		fmt.Sprintf("From: \"Sender %d\" <sender%d@example.org>", seq%7, seq%7),
		"To: \"User One\" <user1@example.net>",
		fmt.Sprintf("Subject: Test message %d", seq),
		"Message-ID: " + id,
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 7bit",
	}
	var b strings.Builder
	for _, h := range headers {
		b.WriteString(h + eol)
	}
	b.WriteString(eol)
	line := fmt.Sprintf("Message %d: the quick brown fox jumps over the lazy dog.", seq)
	for b.Len()+len(line)+len(eol) <= size {
		b.WriteString(line + eol)
	}
	if pad := size - b.Len() - len(eol); pad > 0 {
		b.WriteString(strings.Repeat("x", pad) + eol)
	}
	return []byte(b.String())
}

// writeMailboxes creates the maildir root, owned by the mail user so that
// Dovecot can create each user's maildir at first login, and writes n
// messages into the INBOX of user1 (or the first user). Maildir files use
// LF line ends, as delivery agents write them; Dovecot serves them with
// CRLF.
func writeMailboxes(root string, users map[string]string, n, size, uid, gid int) error {
	if err := os.Mkdir(root, 0o700); err != nil {
		return err
	}
	if err := os.Chown(root, uid, gid); err != nil {
		return err
	}
	if n <= 0 {
		return nil
	}
	owner := "user1"
	if _, ok := users[owner]; !ok {
		owner = sortedUsers(users)[0]
	}
	box := filepath.Join(root, owner)
	for _, d := range []string{box, box + "/cur", box + "/new", box + "/tmp"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	for seq := 1; seq <= n; seq++ {
		msg := makeMessage(seq, size, "\n")
		date := messageEpoch.Add(time.Duration(seq) * time.Minute)
		// <time>.M<seq>P<pid>.<host>,S=<size>:2, is a new, unflagged
		// message in cur/; S= spares Dovecot a stat.
		name := fmt.Sprintf("%d.M%dP%d.proxytest,S=%d:2,", date.Unix(), seq, os.Getpid(), len(msg))
		path := filepath.Join(box, "cur", name)
		if err := os.WriteFile(path, msg, 0o600); err != nil {
			return err
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return err
		}
		// The file's mtime is the message's INTERNALDATE.
		if err := os.Chtimes(path, date, date); err != nil {
			return err
		}
	}
	return nil
}
