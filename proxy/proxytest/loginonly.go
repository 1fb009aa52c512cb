package proxytest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// A loginOnlyFront is what makes a LoginOnly server: a relay in front of
// Dovecot for the pre-authentication phase of each connection.
//
// Dovecot 2.3's imap-login turns the LOGIN command into a PLAIN SASL
// request (client-authenticate.c: cmd_login), announces every mechanism of
// auth_mechanisms, and with "auth_mechanisms = login" answers LOGINDISABLED
// because PLAIN is missing. No setting hides AUTH=PLAIN while LOGIN works.
//
// So the relay, until the client is logged in:
//   - deletes AUTH=PLAIN from every capability list it passes on (the
//     greeting's [CAPABILITY ...], CAPABILITY responses), keeping
//     AUTH=LOGIN;
//   - answers AUTHENTICATE PLAIN itself with NO, as Dovecot answers an
//     unknown mechanism;
//   - on STARTTLS, does STARTTLS with Dovecot too, then TLS with the
//     client; on the implicit port, TLS with the client and implicit TLS
//     with Dovecot, so Dovecot logs TLS sessions as TLS;
//   - passes everything else through, literals included.
//
// After a successful LOGIN or AUTHENTICATE it copies bytes both ways.
type loginOnlyFront struct {
	plain, implicit       net.Listener
	upPlain, upImplicit   string
	serverConf, upTLSConf *tls.Config

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startLoginOnlyFront(upPlain, upImplicit string, certPEM, keyPEM []byte) (*loginOnlyFront, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	f := &loginOnlyFront{
		upPlain:    upPlain,
		upImplicit: upImplicit,
		serverConf: &tls.Config{Certificates: []tls.Certificate{cert}},
		upTLSConf:  &tls.Config{RootCAs: roots, ServerName: "localhost"},
		conns:      map[net.Conn]struct{}{},
	}
	if f.plain, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if f.implicit, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.plain.Close()
		return nil, err
	}
	f.wg.Add(2)
	go f.acceptLoop(f.plain, false)
	go f.acceptLoop(f.implicit, true)
	return f, nil
}

func (f *loginOnlyFront) plainAddr() string    { return f.plain.Addr().String() }
func (f *loginOnlyFront) implicitAddr() string { return f.implicit.Addr().String() }

// close stops accepting, cuts every relayed connection and waits for the
// relay's goroutines.
func (f *loginOnlyFront) close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.plain.Close()
	f.implicit.Close()
	f.wg.Wait()
}

// track registers c to be closed by close; it reports false (and closes
// c) when the front is already closed.
func (f *loginOnlyFront) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *loginOnlyFront) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *loginOnlyFront) acceptLoop(ln net.Listener, implicit bool) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go f.serveLoginOnly(c, implicit)
	}
}

// serveLoginOnly relays one client connection. Named so that goroutine
// dumps say what it is.
func (f *loginOnlyFront) serveLoginOnly(raw net.Conn, implicit bool) {
	defer f.wg.Done()
	defer f.untrack(raw)
	up, err := f.dialUpstream(implicit)
	if err != nil {
		return
	}
	defer f.untrack(up)
	s := &frontSession{f: f, client: raw, up: up}
	if implicit {
		tc := tls.Server(raw, f.serverConf)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		tc.SetDeadline(time.Time{})
		s.client, s.tls = tc, true
	}
	s.cr, s.ur = bufio.NewReader(s.client), bufio.NewReader(s.up)
	s.run()
}

func (f *loginOnlyFront) dialUpstream(implicit bool) (net.Conn, error) {
	addr := f.upPlain
	if implicit {
		addr = f.upImplicit
	}
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if !f.track(raw) {
		return nil, errors.New("closed")
	}
	if !implicit {
		return raw, nil
	}
	tc := tls.Client(raw, f.upTLSConf)
	if err := tc.Handshake(); err != nil {
		f.untrack(raw)
		return nil, err
	}
	// untrack(tc) must find the registered conn: register the TLS one.
	f.mu.Lock()
	delete(f.conns, raw)
	f.conns[tc] = struct{}{}
	f.mu.Unlock()
	return tc, nil
}

// frontSession is one relayed connection before login. It is strictly
// request/response: read one client command, pass it on, pass the
// responses back until the command's tagged one.
type frontSession struct {
	f          *loginOnlyFront
	client, up net.Conn
	cr, ur     *bufio.Reader
	tls        bool
	loggedIn   bool
}

// authPlain matches AUTH=PLAIN as a capability inside a CAPABILITY line.
var authPlain = regexp.MustCompile(`(?i) AUTH=PLAIN([ \]\r\n])`)

func hidePlain(line string) string {
	if !strings.Contains(strings.ToUpper(line), "CAPABILITY") {
		return line
	}
	return authPlain.ReplaceAllString(line, "$1")
}

// maxLine caps a line the relay reads, from either side.
const maxLine = 64 << 10

// readLine reads one line without its line end; the relay passes lines on
// with CRLF.
func readLine(r *bufio.Reader) (string, error) {
	line, err := imapwire.ReadLine(r, maxLine)
	return string(line), err
}

// literalAtEnd returns the size of the literal that ends line ("{5}",
// "{5+}" or "{5-}"), and whether it is synchronizing.
func literalAtEnd(line string) (n int64, sync, ok bool) {
	return imapwire.LiteralAtEnd([]byte(line))
}

// isTagged reports whether resp is the tagged answer to tag, and whether
// it is an OK.
func isTagged(resp, tag string) (tagged, ok bool) {
	status, _, tagged := imapwire.ParseStatus([]byte(resp), tag)
	return tagged, status == "OK"
}

func (s *frontSession) toClient(line string) error {
	_, err := io.WriteString(s.client, hidePlain(line+"\r\n"))
	return err
}

func (s *frontSession) toUpstream(line string) error {
	_, err := io.WriteString(s.up, line+"\r\n")
	return err
}

func (s *frontSession) run() {
	greeting, err := readLine(s.ur)
	if err != nil || s.toClient(greeting) != nil {
		return
	}
	for !s.loggedIn {
		line, err := readLine(s.cr)
		if err != nil {
			return
		}
		f := strings.Fields(line)
		var tag, cmd string
		if len(f) > 0 {
			tag = f[0]
		}
		if len(f) > 1 {
			cmd = strings.ToUpper(f[1])
		}
		switch {
		case cmd == "AUTHENTICATE" && len(f) > 2 && strings.EqualFold(f[2], "PLAIN"):
			err = s.toClient(tag + " NO Unsupported authentication mechanism.")
		case cmd == "STARTTLS" && !s.tls:
			err = s.startTLS(line, tag)
		default:
			err = s.command(line, tag, cmd)
		}
		if err != nil || cmd == "LOGOUT" {
			return
		}
	}
	s.splice()
}

// command passes one command and its responses.
func (s *frontSession) command(line, tag, cmd string) error {
	for {
		if err := s.toUpstream(line); err != nil {
			return err
		}
		n, sync, ok := literalAtEnd(line)
		if !ok {
			break
		}
		if sync {
			resp, err := readLine(s.ur)
			if err != nil {
				return err
			}
			if err := s.toClient(resp); err != nil {
				return err
			}
			if !strings.HasPrefix(resp, "+") {
				return nil // the literal was refused: the command is over
			}
		}
		if _, err := io.CopyN(s.up, s.cr, n); err != nil {
			return err
		}
		var err error
		if line, err = readLine(s.cr); err != nil {
			return err
		}
	}
	if tag == "" {
		tag = "*" // Dovecot answers a line without tag untagged
	}
	for {
		resp, err := readLine(s.ur)
		if err != nil {
			return err
		}
		if err := s.toClient(resp); err != nil {
			return err
		}
		tagged, ok := isTagged(resp, tag)
		switch {
		case strings.HasPrefix(resp, "+"):
			// An AUTHENTICATE challenge: pass the client's answer.
			answer, err := readLine(s.cr)
			if err != nil {
				return err
			}
			if err := s.toUpstream(answer); err != nil {
				return err
			}
		case tagged:
			s.loggedIn = ok && (cmd == "LOGIN" || cmd == "AUTHENTICATE")
			return nil
		case strings.HasPrefix(resp, "* BAD "):
			// Dovecot answers a command whose tag it rejects untagged.
			return nil
		}
	}
}

// startTLS passes STARTTLS to Dovecot; when Dovecot agrees it does TLS
// with Dovecot, then tells the client and does TLS with it.
func (s *frontSession) startTLS(line, tag string) error {
	if err := s.toUpstream(line); err != nil {
		return err
	}
	for {
		resp, err := readLine(s.ur)
		if err != nil {
			return err
		}
		tagged, ok := isTagged(resp, tag)
		if !tagged {
			if err := s.toClient(resp); err != nil {
				return err
			}
			continue
		}
		if !ok {
			return s.toClient(resp)
		}
		up := tls.Client(s.up, s.f.upTLSConf)
		if err := up.Handshake(); err != nil {
			return err
		}
		if err := s.toClient(resp); err != nil {
			return err
		}
		c := tls.Server(s.client, s.f.serverConf)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			return err
		}
		c.SetDeadline(time.Time{})
		s.up, s.client, s.tls = up, c, true
		s.ur, s.cr = bufio.NewReader(up), bufio.NewReader(c)
		return nil
	}
}

// splice copies both ways until either side closes, starting with what
// the readers hold already.
func (s *frontSession) splice() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(s.up, s.cr)
		s.up.Close()
		s.client.Close()
	}()
	io.Copy(s.client, s.ur)
	s.up.Close()
	s.client.Close()
	<-done
}
