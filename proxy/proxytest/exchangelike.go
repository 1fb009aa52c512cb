package proxytest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/tlsconf"
)

// An Exchange-like server is a scripted IMAP front that behaves, before
// login, the way Microsoft Exchange 2010/2016 is documented and reported
// to behave (MS-OXIMAP4, MS-STANXIMAP, and what clients log against it),
// and after login relays to an in-memory mailbox store (memupstream):
//
//   - the greeting is "* OK The Microsoft Exchange IMAP4 service is
//     ready." with no CAPABILITY code (Exchange 2013 and later append the
//     server's name in base64 in brackets after the text), and the tagged
//     OK of LOGIN carries none either: capabilities come only from an
//     explicit CAPABILITY;
//   - CAPABILITY lists AUTH=NTLM and AUTH=GSSAPI before AUTH=PLAIN, and
//     before STARTTLS LOGINDISABLED instead of AUTH=PLAIN (Exchange's
//     default login type, "SecureLogin");
//   - with RefusePlain, AUTH=PLAIN is advertised but every AUTHENTICATE
//     PLAIN is answered "+" and then "NO AUTHENTICATE failed.", even with
//     the right password, as reported for builds whose plain text
//     authentication is switched off; LOGIN still works;
//   - a user is named DOMAIN\user (the pre-Windows 2000 form) or by the
//     UPN user@suffix; a bare "user" is refused ("NO LOGIN failed.");
//   - the certificate is self-signed (Exchange's default one);
//   - AUTHENTICATE NTLM and GSSAPI are refused: no test needs them.
//
// Start one with StartExchangeLike.
type ExchangeLikeOptions struct {
	// Users maps the local part of each account (the sAMAccountName) to
	// its password. If nil, DefaultUsers() is used.
	Users map[string]string
	// Domain is the NetBIOS domain of the DOMAIN\user form. If empty,
	// "CORP".
	Domain string
	// UPNSuffix is the suffix of the UPN form user@suffix. If empty,
	// "corp.example".
	UPNSuffix string
	// RefusePlain makes AUTHENTICATE PLAIN fail after the credential,
	// whatever it is, while AUTH=PLAIN stays advertised. If false,
	// AUTHENTICATE PLAIN works like LOGIN.
	RefusePlain bool
	// CapabilityPadding adds capability atoms (X-EXCHANGE-PAD-N) until
	// every CAPABILITY line is at least this many bytes long. If zero,
	// the line is Exchange 2016's (about 150 bytes).
	CapabilityPadding int
	// Messages is the number of messages (MakeMessage, 2 KB each) in every
	// user's INBOX; every third one is \Seen and every fifth \Flagged,
	// so a pull shows flags. If zero, the INBOX is empty.
	Messages int
}

// ExchangeLike is a running Exchange-like server.
type ExchangeLike struct {
	// Addr is the plaintext listener (port 143 style, with STARTTLS);
	// ImplicitAddr is the implicit TLS one (993 style).
	Addr, ImplicitAddr string
	// CAFile is the PEM file of the self-signed certificate it serves
	// (SAN localhost and 127.0.0.1); CertPEM is its content, and Pin the
	// base64 SHA-256 of its public key, as upstream.pin_sha256 wants it.
	CAFile  string
	CertPEM []byte
	Pin     string
	// Users is the effective local part -> password map; Domain and
	// UPNSuffix the effective names.
	Users             map[string]string
	Domain, UPNSuffix string

	opts       ExchangeLikeOptions
	mem        *memupstream.Server
	backend    map[string]string // local part -> the memupstream password
	plain      net.Listener
	implicit   net.Listener
	serverConf *tls.Config

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	logins []ExchangeLogin
	closed bool
}

// ExchangeLogin is one login attempt the server judged: the witness of
// what imapgate sent.
type ExchangeLogin struct {
	Command string // "LOGIN" or "AUTHENTICATE PLAIN"
	User    string // the user name as received
	OK      bool
}

// exchangeGreeting is the greeting of Exchange 2016; the bracket is the
// base64 (UTF-16LE) of a server name, text rather than a response code.
const exchangeGreeting = "* OK The Microsoft Exchange IMAP4 service is ready. [TQBCAFgAMAAxAC4AYwBvAHIAcAAuAGUAeABhAG0AcABsAGUA]"

// StartExchangeLike starts an Exchange-like server on loopback and stops
// it in t.Cleanup. It needs nothing installed.
func StartExchangeLike(t testing.TB, o ExchangeLikeOptions) *ExchangeLike {
	t.Helper()
	x, err := NewExchangeLike(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// NewExchangeLike is StartExchangeLike for programs that are not tests;
// Close stops it.
func NewExchangeLike(o ExchangeLikeOptions) (*ExchangeLike, error) {
	if o.Users == nil {
		o.Users = DefaultUsers()
	}
	x := &ExchangeLike{
		opts: o, Users: map[string]string{}, backend: map[string]string{},
		Domain: o.Domain, UPNSuffix: o.UPNSuffix, conns: map[net.Conn]struct{}{},
	}
	if x.Domain == "" {
		x.Domain = "CORP"
	}
	if x.UPNSuffix == "" {
		x.UPNSuffix = "corp.example"
	}
	names := make([]string, 0, len(o.Users))
	for u, p := range o.Users {
		x.Users[u] = p
		x.backend[u] = "backend-" + u
		names = append(names, u)
	}
	sort.Strings(names)
	mem, err := memupstream.Start(x.backend)
	if err != nil {
		return nil, err
	}
	x.mem = mem
	for _, u := range names {
		for i := range o.Messages {
			if err := mem.AddMessage(u, "INBOX", MakeMessage(i, 2048)); err != nil {
				mem.Close()
				return nil, err
			}
		}
	}
	if err := x.listen(); err != nil {
		x.Close()
		return nil, err
	}
	if o.Messages > 0 {
		if err := x.setFlags(names, o.Messages); err != nil {
			x.Close()
			return nil, fmt.Errorf("proxytest: exchange-like flags: %w", err)
		}
	}
	return x, nil
}

func (x *ExchangeLike) listen() error {
	cert, certPEM, err := tlsconf.SelfSigned(7*24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	x.CertPEM = certPEM
	x.serverConf = &tls.Config{Certificates: []tls.Certificate{cert}}
	leaf, _ := pem.Decode(certPEM)
	parsed, err := x509.ParseCertificate(leaf.Bytes)
	if err != nil {
		return err
	}
	x.Pin = tlsconf.SPKIPin(parsed)
	dir, err := os.MkdirTemp("", "exchangelike-")
	if err != nil {
		return err
	}
	x.CAFile = filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(x.CAFile, certPEM, 0o644); err != nil {
		return err
	}
	if x.plain, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	if x.implicit, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	x.Addr, x.ImplicitAddr = x.plain.Addr().String(), x.implicit.Addr().String()
	x.wg.Add(2)
	go x.acceptExchange(x.plain, false)
	go x.acceptExchange(x.implicit, true)
	return nil
}

// setFlags marks every third message \Seen and every fifth \Flagged,
// through the backend's own IMAP.
func (x *ExchangeLike) setFlags(users []string, n int) error {
	var seen, flagged []string
	for i := 1; i <= n; i++ {
		if i%3 == 0 {
			seen = append(seen, strconv.Itoa(i))
		}
		if i%5 == 0 {
			flagged = append(flagged, strconv.Itoa(i))
		}
	}
	for _, u := range users {
		c, err := net.DialTimeout("tcp", x.mem.Addr, 5*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		cmds := []string{"a LOGIN " + quoteArg(u) + " " + quoteArg(x.backend[u]), "b SELECT INBOX"}
		if len(seen) > 0 {
			cmds = append(cmds, "c STORE "+strings.Join(seen, ",")+` +FLAGS.SILENT (\Seen)`)
		}
		if len(flagged) > 0 {
			cmds = append(cmds, "d STORE "+strings.Join(flagged, ",")+` +FLAGS.SILENT (\Flagged)`)
		}
		err = backendScript(c, r, cmds)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// backendScript runs commands on a backend connection whose greeting is
// still unread, each to its tagged OK.
func backendScript(w io.Writer, r *bufio.Reader, cmds []string) error {
	if _, err := imapwire.ReadLine(r, maxLine); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if _, err := io.WriteString(w, cmd+"\r\n"); err != nil {
			return err
		}
		tag, _, _ := strings.Cut(cmd, " ")
		for {
			line, err := imapwire.ReadLine(r, maxLine)
			if err != nil {
				return err
			}
			if status, _, ok := imapwire.ParseStatus(line, tag); ok {
				if status != "OK" {
					return fmt.Errorf("backend answered %q to %s", line, tag)
				}
				break
			}
		}
	}
	return nil
}

// Logins returns every login attempt so far, in order.
func (x *ExchangeLike) Logins() []ExchangeLogin {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]ExchangeLogin(nil), x.logins...)
}

// Close stops the server, its connections and its store.
func (x *ExchangeLike) Close() error {
	x.mu.Lock()
	x.closed = true
	for c := range x.conns {
		c.Close()
	}
	x.mu.Unlock()
	if x.plain != nil {
		x.plain.Close()
	}
	if x.implicit != nil {
		x.implicit.Close()
	}
	x.wg.Wait()
	if x.CAFile != "" {
		os.RemoveAll(filepath.Dir(x.CAFile))
	}
	return x.mem.Close()
}

func (x *ExchangeLike) track(c net.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		c.Close()
		return false
	}
	x.conns[c] = struct{}{}
	return true
}

func (x *ExchangeLike) untrack(c net.Conn) {
	x.mu.Lock()
	delete(x.conns, c)
	x.mu.Unlock()
	c.Close()
}

func (x *ExchangeLike) acceptExchange(ln net.Listener, implicit bool) {
	defer x.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !x.track(c) {
			return
		}
		x.wg.Add(1)
		go x.serveExchange(c, implicit)
	}
}

// exchangeSession is one connection before login.
type exchangeSession struct {
	x    *ExchangeLike
	raw  net.Conn
	conn net.Conn
	r    *bufio.Reader
	tls  bool
	// local is the account a successful login resolved to.
	local string
}

// serveExchange runs one connection. Named so that goroutine dumps say
// what it is.
func (x *ExchangeLike) serveExchange(raw net.Conn, implicit bool) {
	defer x.wg.Done()
	defer x.untrack(raw)
	s := &exchangeSession{x: x, raw: raw, conn: raw}
	if implicit {
		if !s.handshake() {
			return
		}
	}
	s.r = bufio.NewReader(s.conn)
	s.reply(exchangeGreeting)
	for {
		s.conn.SetReadDeadline(time.Now().Add(30 * time.Minute))
		cmd, err := s.readCommand()
		if err != nil {
			return
		}
		args := parseArgs(cmd)
		if len(args) < 2 {
			s.reply("* BAD Command Error. 10")
			continue
		}
		tag, verb := args[0], strings.ToUpper(args[1])
		switch verb {
		case "CAPABILITY":
			s.reply("* CAPABILITY " + s.capabilities())
			s.reply(tag + " OK CAPABILITY completed.")
		case "NOOP":
			s.reply(tag + " OK NOOP completed.")
		case "ID":
			s.reply(`* ID ("name" "Microsoft.Exchange.Imap4.Imap4Server" "version" "15.1")`)
			s.reply(tag + " OK ID completed.")
		case "LOGOUT":
			s.reply("* BYE Microsoft Exchange Server IMAP4 server signing off.")
			s.reply(tag + " OK LOGOUT completed.")
			return
		case "STARTTLS":
			if s.tls {
				s.reply(tag + " BAD Command received in Invalid state.")
				continue
			}
			s.reply(tag + " OK Begin TLS negotiation now.")
			if !s.handshake() {
				return
			}
			s.r = bufio.NewReader(s.conn)
		case "AUTHENTICATE":
			if len(args) < 3 || !strings.EqualFold(args[2], "PLAIN") || !s.tls {
				s.reply(tag + " NO AUTHENTICATE failed.")
				continue
			}
			if s.authenticatePlain(tag) {
				s.relay(tag, "AUTHENTICATE completed.")
				return
			}
		case "LOGIN":
			if len(args) != 4 {
				s.reply(tag + " BAD Command Argument Error. 11")
				continue
			}
			if !s.tls {
				s.reply(tag + " NO LOGIN failed.") // LOGINDISABLED
				continue
			}
			local, ok := s.x.check(args[2], args[3])
			s.x.note("LOGIN", args[2], ok)
			if !ok {
				s.reply(tag + " NO LOGIN failed.")
				continue
			}
			s.local = local
			s.relay(tag, "LOGIN completed.")
			return
		default:
			s.reply(tag + " BAD Command received in Invalid state.")
		}
	}
}

func (s *exchangeSession) handshake() bool {
	tc := tls.Server(s.conn, s.x.serverConf)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if tc.Handshake() != nil {
		return false
	}
	tc.SetDeadline(time.Time{})
	s.conn, s.tls = tc, true
	return true
}

func (s *exchangeSession) reply(line string) {
	io.WriteString(s.conn, line+"\r\n")
}

// capabilities is Exchange 2016's list, with LOGINDISABLED in place of
// AUTH=PLAIN before TLS, padded to CapabilityPadding bytes.
func (s *exchangeSession) capabilities() string {
	caps := []string{"IMAP4", "IMAP4rev1", "AUTH=NTLM", "AUTH=GSSAPI"}
	if s.tls {
		caps = append(caps, "AUTH=PLAIN")
	} else {
		caps = append(caps, "LOGINDISABLED", "STARTTLS")
	}
	caps = append(caps, "UIDPLUS", "MOVE", "ID", "UNSELECT", "CHILDREN", "IDLE", "NAMESPACE", "LITERAL+")
	line := strings.Join(caps, " ")
	for i := 1; len(line) < s.x.opts.CapabilityPadding; i++ {
		line += " X-EXCHANGE-PAD-" + strconv.Itoa(i)
	}
	return line
}

// authenticatePlain runs AUTHENTICATE PLAIN without SASL-IR (Exchange
// does not offer it): "+", the client's answer, the verdict.
func (s *exchangeSession) authenticatePlain(tag string) bool {
	s.reply("+ ")
	line, err := imapwire.ReadLine(s.r, maxLine)
	if err != nil {
		return false
	}
	if string(line) == "*" {
		s.reply(tag + " BAD AUTHENTICATE cancelled.")
		return false
	}
	dec, err := base64.StdEncoding.DecodeString(string(line))
	parts := strings.Split(string(dec), "\x00")
	if err != nil || len(parts) != 3 {
		s.reply(tag + " NO AUTHENTICATE failed.")
		return false
	}
	local, ok := s.x.check(parts[1], parts[2])
	ok = ok && !s.x.opts.RefusePlain && (parts[0] == "" || parts[0] == parts[1])
	s.x.note("AUTHENTICATE PLAIN", parts[1], ok)
	if !ok {
		s.reply(tag + " NO AUTHENTICATE failed.")
		return false
	}
	s.local = local
	return true
}

// check resolves an Exchange user name (DOMAIN\user or user@suffix, case
// insensitive) and checks its password.
func (x *ExchangeLike) check(name, password string) (local string, ok bool) {
	if d, u, found := strings.Cut(name, `\`); found && strings.EqualFold(d, x.Domain) {
		local = u
	} else if u, suffix, found := strings.Cut(name, "@"); found && strings.EqualFold(suffix, x.UPNSuffix) {
		local = u
	} else {
		return "", false
	}
	for u, p := range x.Users {
		if strings.EqualFold(u, local) && p == password {
			return u, true
		}
	}
	return "", false
}

func (x *ExchangeLike) note(command, user string, ok bool) {
	x.mu.Lock()
	x.logins = append(x.logins, ExchangeLogin{Command: command, User: user, OK: ok})
	x.mu.Unlock()
}

// relay logs in to the backend as the session's user, answers the
// client's login with Exchange's OK (no capabilities), and copies bytes
// both ways until either side ends.
func (s *exchangeSession) relay(tag, text string) {
	up, err := net.DialTimeout("tcp", s.x.mem.Addr, 5*time.Second)
	if err != nil {
		s.reply("* BYE Connection is closed. 13")
		return
	}
	if !s.x.track(up) {
		return
	}
	defer s.x.untrack(up)
	ur := bufio.NewReader(up)
	up.SetDeadline(time.Now().Add(10 * time.Second))
	if err := backendScript(up, ur, []string{"x LOGIN " + quoteArg(s.local) + " " + quoteArg(s.x.backend[s.local])}); err != nil {
		s.reply("* BYE Connection is closed. 13")
		return
	}
	up.SetDeadline(time.Time{})
	s.conn.SetReadDeadline(time.Time{})
	s.reply(tag + " OK " + text)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, s.r)
		up.Close()
		s.conn.Close()
	}()
	io.Copy(s.conn, ur)
	up.Close()
	s.conn.Close()
	<-done
}

// readCommand reads one command line with its literals inlined
// ("{N}\r\n" followed by the N bytes), answering a synchronizing literal
// with Exchange's continuation.
func (s *exchangeSession) readCommand() ([]byte, error) {
	var out []byte
	for {
		line, err := imapwire.ReadLine(s.r, maxLine)
		if err != nil {
			return nil, err
		}
		out = append(out, line...)
		n, sync, ok := imapwire.LiteralAtEnd(line)
		if !ok {
			return out, nil
		}
		if n > maxLine {
			return nil, errors.New("literal too big")
		}
		if sync {
			s.reply("+ Ready for additional command text.")
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(s.r, lit); err != nil {
			return nil, err
		}
		out = append(append(out, "\r\n"...), lit...)
	}
}

// parseArgs splits a command into atoms, quoted strings and literals
// (as read by readCommand), unquoted. Parentheses stay inside atoms:
// only LOGIN's arguments are looked at.
func parseArgs(b []byte) []string {
	var args []string
	for len(b) > 0 {
		switch b[0] {
		case ' ':
			b = b[1:]
		case '"':
			s, rest, ok := imapwire.Unquote(b)
			if !ok {
				return append(args, string(b))
			}
			args, b = append(args, s), rest
		case '{':
			end := bytes.Index(b, []byte("}\r\n"))
			n, _, ok := imapwire.ParseLiteralHeader(b[:max(end+1, 0)])
			if end < 0 || !ok || int64(len(b)-end-3) < n {
				return append(args, string(b))
			}
			start := end + 3
			args, b = append(args, string(b[start:start+int(n)])), b[start+int(n):]
		default:
			i := bytes.IndexByte(b, ' ')
			if i < 0 {
				i = len(b)
			}
			args, b = append(args, string(b[:i])), b[i:]
		}
	}
	return args
}

// quoteArg quotes s for a command to the backend, or makes it a literal.
func quoteArg(s string) string {
	if q, ok := imapwire.Quote(s); ok {
		return q
	}
	return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s
}
