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
	b := make([]byte, 0, size+1024)
	for _, h := range headers {
		b = append(append(b, h...), eol...)
	}
	b = append(b, eol...)
	line := fmt.Sprintf("Message %d: the quick brown fox jumps over the lazy dog.%s", seq, eol)
	for len(b)+len(line) <= size {
		b = append(b, line...)
	}
	if pad := size - len(b) - len(eol); pad > 0 {
		b = append(append(b, strings.Repeat("x", pad)...), eol...)
	}
	return b
}

// mailboxes is the mail written before Dovecot starts.
type mailboxes struct {
	root     string            // the maildir root, mail_location's parent of %u
	users    map[string]string // every user
	messages int               // into the INBOX of user1, or the first user
	size     int               // of each of those
	// others messages of othersSize go into every other user's INBOX.
	others, othersSize int
	uid, gid           int // the mail user, who owns everything
}

// write creates the maildir root, owned by the mail user so that Dovecot
// can create each user's maildir at first login, and the messages.
// Maildir files use LF line ends, as delivery agents write them; Dovecot
// serves them with CRLF. Writing 2,000 messages of 50 KB takes well under
// a second: files go straight into cur/ with their size in the name, and
// Dovecot indexes them at the first SELECT.
func (m mailboxes) write() error {
	if err := os.Mkdir(m.root, 0o700); err != nil {
		return err
	}
	if err := os.Chown(m.root, m.uid, m.gid); err != nil {
		return err
	}
	owner := "user1"
	if _, ok := m.users[owner]; !ok {
		owner = sortedUsers(m.users)[0]
	}
	if m.messages > 0 {
		if err := m.writeInbox(owner, m.messages, m.size); err != nil {
			return err
		}
	}
	if m.others > 0 {
		for u := range m.users {
			if u == owner {
				continue
			}
			if err := m.writeInbox(u, m.others, m.othersSize); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeInbox creates user's maildir with n messages of about size bytes.
func (m mailboxes) writeInbox(user string, n, size int) error {
	box := filepath.Join(m.root, user)
	for _, d := range []string{box, box + "/cur", box + "/new", box + "/tmp"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, m.uid, m.gid); err != nil {
			return err
		}
	}
	pid := os.Getpid()
	for seq := 1; seq <= n; seq++ {
		msg := makeMessage(seq, size, "\n")
		date := messageEpoch.Add(time.Duration(seq) * time.Minute)
		// <time>.M<seq>P<pid>.<host>,S=<size>:2, is a new, unflagged
		// message in cur/; S= spares Dovecot a stat.
		name := fmt.Sprintf("%d.M%dP%d.proxytest,S=%d:2,", date.Unix(), seq, pid, len(msg))
		if err := writeMessage(filepath.Join(box, "cur", name), msg, date, m.uid, m.gid); err != nil {
			return err
		}
	}
	return nil
}

// writeMessage writes one maildir file owned by uid:gid whose mtime, the
// message's INTERNALDATE, is date.
func writeMessage(path string, msg []byte, date time.Time, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(msg)
	if err == nil {
		err = f.Chown(uid, gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(path, date, date)
	}
	return err
}
