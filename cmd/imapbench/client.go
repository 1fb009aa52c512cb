package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A client is a minimal line-oriented IMAP client: enough of the protocol
// to log in, select, fetch, idle and log out, and no more. It sends one
// command at a time and reads until that command's tagged response. Of the
// server's responses it parses only tags, status words, literal sizes
// ({N}), continuation requests and "* N EXISTS" / "* N FETCH"; message
// bodies inside literals are skipped, never stored.
//
// Every blocking call takes a context and is bounded by the client's
// timeout: a call fails when the server sends nothing for that long (a
// long FETCH may run longer as long as bytes keep arriving), or when the
// context is done.
type client struct {
	conn    net.Conn
	pr      *progressReader
	br      *bufio.Reader
	timeout time.Duration
	tagN    int
	wbuf    []byte
	head    [headMax]byte
}

// headMax is how much of a response line the client keeps: the tag, the
// status word and enough text for an error message.
const headMax = 256

// maxLiteral bounds a literal size the client accepts (1 TiB): a larger
// one is a broken or hostile server, not a mailbox.
const maxLiteral = 1 << 40

// tlsMode is how a connection reaches the IMAP protocol.
type tlsMode string

const (
	tlsImplicit tlsMode = "implicit" // TLS from the first byte (port 993)
	tlsStartTLS tlsMode = "starttls" // plaintext greeting, then STARTTLS
	tlsNone     tlsMode = "none"     // plaintext throughout
)

func parseTLSMode(s string) (tlsMode, error) {
	switch m := tlsMode(strings.ToLower(s)); m {
	case tlsImplicit, tlsStartTLS, tlsNone:
		return m, nil
	}
	return "", fmt.Errorf("--tls: %q is not one of implicit, starttls, none", s)
}

// target is the server under load and how to log in to it. It is shared
// by every scenario; the zero values of optional fields are documented.
type target struct {
	// Addr is the host:port to connect to. Required.
	Addr string
	// TLS is how to reach IMAP. If empty, tlsImplicit is used.
	TLS tlsMode
	// TLSConfig is used for implicit TLS and STARTTLS. If nil, the
	// system roots verify a certificate for the host of Addr.
	TLSConfig *tls.Config
	// Login uses the LOGIN command instead of AUTHENTICATE PLAIN with
	// SASL-IR (for plaintext baselines against a server directly).
	Login bool
	// User logs in every session unless UsersCount is set.
	User string
	// UsersPattern and UsersCount spread sessions over UsersCount users:
	// session i logs in as UsersPattern with its one %d replaced by
	// i mod UsersCount + 1. All users share Password.
	UsersPattern string
	UsersCount   int
	// Password is sensitive: it is never logged nor written to results.
	Password string
	// Timeout bounds each step (connect, handshake, each response). If
	// zero, 10s is used.
	Timeout time.Duration
	// Sources are local addresses to connect from, used round-robin so
	// that many sessions fit the ephemeral port range. If empty, the
	// kernel chooses.
	Sources []netip.Addr
}

func (t target) timeout() time.Duration {
	if t.Timeout <= 0 {
		return 10 * time.Second
	}
	return t.Timeout
}

func (t target) mode() tlsMode {
	if t.TLS == "" {
		return tlsImplicit
	}
	return t.TLS
}

// user is the login name of session (or login cycle) i.
func (t target) user(i int) string {
	if t.UsersCount <= 0 {
		return t.User
	}
	return strings.Replace(t.UsersPattern, "%d", strconv.Itoa(i%t.UsersCount+1), 1)
}

// source is the local address of connection i, or the zero Addr.
func (t target) source(i int) netip.Addr {
	if len(t.Sources) == 0 {
		return netip.Addr{}
	}
	return t.Sources[i%len(t.Sources)]
}

// summary is how results name the target.
func (t target) summary() targetSummary {
	auth := "plain"
	if t.Login {
		auth = "login"
	}
	s := targetSummary{Addr: t.Addr, TLS: string(t.mode()), Auth: auth, Sources: len(t.Sources)}
	if t.UsersCount > 0 {
		s.Users = t.UsersCount
	} else {
		s.Users = 1
	}
	return s
}

// targetSummary identifies the target in every result.
type targetSummary struct {
	Addr    string `json:"addr"`
	TLS     string `json:"tls"`
	Auth    string `json:"auth"`    // "plain" (AUTHENTICATE PLAIN) or "login"
	Users   int    `json:"users"`   // distinct user names used
	Sources int    `json:"sources"` // source addresses; 0: the kernel's choice
}

func (s targetSummary) String() string {
	src := "kernel's choice"
	if s.Sources > 0 {
		src = strconv.Itoa(s.Sources)
	}
	return fmt.Sprintf("%s tls=%s auth=%s users=%d sources=%s", s.Addr, s.TLS, s.Auth, s.Users, src)
}

// stepError says which step of a session failed.
type stepError struct {
	Step string // "connect", "tls", "greeting", "AUTHENTICATE", ...
	Err  error
}

func (e *stepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *stepError) Unwrap() error { return e.Err }

// statusError is a tagged NO or BAD, or a BYE that ended the session.
type statusError struct {
	Status string // "NO", "BAD", "BYE"
	Text   string // the server's text, at most headMax bytes
}

func (e *statusError) Error() string { return e.Status + " " + e.Text }

// dial connects to t from src (if valid), does implicit TLS or STARTTLS as
// t says and reads the greeting. bufSize is the size of the read buffer:
// small for thousands of idle sessions, large for FETCH throughput.
func dial(ctx context.Context, t target, src netip.Addr, bufSize int) (*client, error) {
	d := net.Dialer{Timeout: t.timeout()}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		d.Control = bindAddressNoPort
	}
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, &stepError{"connect", err}
	}
	c := newClient(conn, t.timeout(), bufSize)
	if t.mode() == tlsImplicit {
		if err := c.handshake(ctx, t.tlsConfig()); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if err := c.greeting(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if t.mode() == tlsStartTLS {
		if err := c.startTLS(ctx, t.tlsConfig()); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (t target) tlsConfig() *tls.Config {
	if t.TLSConfig != nil {
		return t.TLSConfig
	}
	host, _, _ := net.SplitHostPort(t.Addr)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}

// authenticate logs in as user with AUTHENTICATE PLAIN (SASL-IR), or with
// LOGIN when t.Login is set.
func (c *client) authenticate(ctx context.Context, t target, user string) error {
	if t.Login {
		return c.login(ctx, user, t.Password)
	}
	return c.authenticatePlain(ctx, user, t.Password)
}

func newClient(conn net.Conn, timeout time.Duration, bufSize int) *client {
	c := &client{conn: conn, timeout: timeout}
	c.pr = &progressReader{conn: conn, raw: conn, timeout: timeout}
	c.br = bufio.NewReaderSize(c.pr, bufSize)
	return c
}

// Close closes the connection without a word to the server.
func (c *client) Close() error { return c.conn.Close() }

// TLSState returns the TLS connection state, and false on plaintext.
func (c *client) TLSState() (tls.ConnectionState, bool) {
	if tc, ok := c.conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// begin starts a blocking operation: the connection's deadline is the
// timeout from now, and ctx being done interrupts the operation. The
// returned function must be called when the operation ends.
func (c *client) begin(ctx context.Context) (end func()) {
	c.pr.cancelled.Store(false)
	c.conn.SetDeadline(time.Now().Add(c.timeout))
	stop := context.AfterFunc(ctx, c.pr.cancel)
	return func() { stop() }
}

// fail wraps err with its step, reporting ctx's error in place of the
// timeout that ctx being done caused.
func (c *client) fail(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return &stepError{step, err}
}

func (c *client) handshake(ctx context.Context, cfg *tls.Config) error {
	end := c.begin(ctx)
	defer end()
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail(ctx, "tls", err)
	}
	c.conn = tc
	c.pr.conn = tc
	return nil
}

func (c *client) greeting(ctx context.Context) error {
	end := c.begin(ctx)
	defer end()
	l, err := c.readLine()
	if err != nil {
		return c.fail(ctx, "greeting", err)
	}
	head := l.head
	word, text := splitWord(head[min(len(head), 2):])
	switch {
	case !hasPrefix(head, "* "):
		return &stepError{"greeting", fmt.Errorf("not an IMAP greeting: %q", trimCRLF(head))}
	case isWord(word, "OK"):
		return nil
	case isWord(word, "BYE"):
		return &stepError{"greeting", &statusError{"BYE", string(text)}}
	}
	return &stepError{"greeting", fmt.Errorf("unexpected greeting %q", trimCRLF(head))}
}

// startTLS upgrades the connection. Bytes the server sent after its OK
// and before the handshake would be read as if they came over TLS, so
// they are an error (a response injection), not data.
func (c *client) startTLS(ctx context.Context, cfg *tls.Config) error {
	r, err := c.command(ctx, "STARTTLS", false, "STARTTLS")
	if err != nil {
		return err
	}
	if r.Status != "OK" {
		return &stepError{"STARTTLS", &statusError{r.Status, r.Text}}
	}
	if c.br.Buffered() > 0 {
		return &stepError{"STARTTLS", fmt.Errorf("server sent %d bytes after its OK, before the TLS handshake (response injection?)", c.br.Buffered())}
	}
	if err := c.handshake(ctx, cfg); err != nil {
		return err
	}
	c.br.Reset(c.pr)
	return nil
}

func (c *client) authenticatePlain(ctx context.Context, user, pass string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	return c.expectOK(ctx, "AUTHENTICATE", "AUTHENTICATE PLAIN "+ir)
}

func (c *client) login(ctx context.Context, user, pass string) error {
	qu, err := quote(user)
	if err != nil {
		return &stepError{"LOGIN", fmt.Errorf("user name: %w", err)}
	}
	qp, err := quote(pass)
	if err != nil {
		return &stepError{"LOGIN", fmt.Errorf("password: %w", err)}
	}
	return c.expectOK(ctx, "LOGIN", "LOGIN "+qu+" "+qp)
}

// selectInbox selects INBOX and returns its message count (EXISTS).
func (c *client) selectInbox(ctx context.Context) (int64, error) {
	r, err := c.command(ctx, "SELECT", false, "SELECT INBOX")
	if err != nil {
		return 0, err
	}
	if r.Status != "OK" {
		return 0, &stepError{"SELECT", &statusError{r.Status, r.Text}}
	}
	return max(r.Exists, 0), nil
}

func (c *client) noop(ctx context.Context) error { return c.expectOK(ctx, "NOOP", "NOOP") }

func (c *client) logout(ctx context.Context) error { return c.expectOK(ctx, "LOGOUT", "LOGOUT") }

// idle sends IDLE and waits for the server's continuation request
// ("+ idling"). The command ends with done.
func (c *client) idle(ctx context.Context) (tag string, err error) {
	r, err := c.command(ctx, "IDLE", true, "IDLE")
	if err != nil {
		return "", err
	}
	if !r.Continuation {
		return "", &stepError{"IDLE", &statusError{r.Status, r.Text}}
	}
	return r.Tag, nil
}

// done ends the IDLE command tag and waits for its tagged OK.
func (c *client) done(ctx context.Context, tag string) error {
	end := c.begin(ctx)
	defer end()
	if _, err := c.conn.Write([]byte("DONE\r\n")); err != nil {
		return c.fail(ctx, "DONE", err)
	}
	var r response
	if err := c.readResponse(tag, false, &r); err != nil {
		return c.fail(ctx, "DONE", err)
	}
	if r.Status != "OK" {
		return &stepError{"DONE", &statusError{r.Status, r.Text}}
	}
	return nil
}

func (c *client) expectOK(ctx context.Context, step, cmd string) error {
	r, err := c.command(ctx, step, false, cmd)
	if err != nil {
		return err
	}
	if r.Status != "OK" {
		return &stepError{step, &statusError{r.Status, r.Text}}
	}
	return nil
}

// command sends "TAG cmd" and reads until its tagged response, or until a
// continuation request when cont is set. step names the command in
// errors; cmd itself may carry credentials and never appears in one.
func (c *client) command(ctx context.Context, step string, cont bool, cmd string) (response, error) {
	end := c.begin(ctx)
	defer end()
	c.tagN++
	tag := "a" + strconv.Itoa(c.tagN)
	c.wbuf = append(append(append(append(c.wbuf[:0], tag...), ' '), cmd...), '\r', '\n')
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return response{}, c.fail(ctx, step, err)
	}
	r := response{Tag: tag}
	if err := c.readResponse(tag, cont, &r); err != nil {
		return r, c.fail(ctx, step, err)
	}
	return r, nil
}

// response is what the client saw from a command's start to its end.
type response struct {
	Tag          string
	Status       string // "OK", "NO" or "BAD"; "" for a continuation
	Text         string // the rest of the tagged line, at most headMax bytes
	Continuation bool   // the server sent "+ ..." (read with cont set)
	WireBytes    int64  // every byte of every response line and literal
	BodyBytes    int64  // bytes inside literals
	Literals     int
	Untagged     int
	Fetches      int   // "* N FETCH" responses
	Exists       int64 // the last "* N EXISTS", or -1
	Bye          string
}

// readResponse reads lines until the tagged response of tag, or a
// continuation request when cont is set, skipping literals. Only a line
// that starts a response is checked for the tag: a literal's content and
// the rest of a line after a literal can never end the command.
func (c *client) readResponse(tag string, cont bool, r *response) error {
	r.Exists = -1
	mid := false // the line continues a response after a literal
	for {
		l, err := c.readLine()
		r.WireBytes += int64(l.n)
		head := l.head
		if err != nil {
			if r.Bye != "" && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
				return &statusError{"BYE", r.Bye}
			}
			return err
		}
		if !mid {
			switch {
			case hasPrefix(head, tag) && len(head) > len(tag) && head[len(tag)] == ' ':
				word, text := splitWord(head[len(tag)+1:])
				switch {
				case isWord(word, "OK"), isWord(word, "NO"), isWord(word, "BAD"):
					r.Status, r.Text = strings.ToUpper(string(word)), string(text)
					return nil
				}
				return fmt.Errorf("malformed tagged response %q", trimCRLF(head))
			case hasPrefix(head, "+"):
				if cont {
					r.Continuation = true
					return nil
				}
				return errors.New("unexpected continuation request")
			case hasPrefix(head, "* "):
				r.Untagged++
				word, rest := splitWord(head[2:])
				switch {
				case isWord(word, "OK"), isWord(word, "NO"), isWord(word, "BAD"), isWord(word, "PREAUTH"):
					continue // resp-text: never a literal
				case isWord(word, "BYE"):
					r.Bye = string(rest)
					continue
				}
				if num, ok := parseNumber(word); ok {
					kind, _ := splitWord(rest)
					switch {
					case isWord(kind, "EXISTS"):
						r.Exists = num
					case isWord(kind, "FETCH"):
						r.Fetches++
					}
				}
			default:
				return fmt.Errorf("unexpected response line %q", trimCRLF(head))
			}
		}
		lit, err := l.literal()
		if err != nil {
			return err
		}
		if lit < 0 {
			mid = false
			continue
		}
		if err := c.skip(lit); err != nil {
			return fmt.Errorf("reading a literal of %d bytes: %w", lit, err)
		}
		r.WireBytes += lit
		r.BodyBytes += lit
		r.Literals++
		mid = true
	}
}

// skip reads and drops n bytes, a literal, through the read buffer:
// nothing is copied out of it, nothing allocated.
func (c *client) skip(n int64) error {
	for n > 0 {
		chunk := int(min(n, 1<<30))
		if _, err := c.br.Discard(chunk); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= int64(chunk)
	}
	return nil
}

// A line is what readLine read of one response line.
type line struct {
	head []byte // the first bytes, at most headMax; valid until the next readLine
	n    int    // the length of the whole line
	tail [32]byte
	tn   int // tail[:tn] are the last bytes of the line, where a literal size is
}

// literal returns the size of the literal announced at the end of the
// line, or -1. Only a line that may carry one should be asked: in a
// status response ({OK,NO,BAD,BYE} text) "{5}" is text.
func (l *line) literal() (int64, error) { return literalSize(l.tail[:l.tn]) }

// readLine reads one line through its LF, however long, keeping its
// first and last bytes.
func (c *client) readLine() (line, error) {
	var l line
	for {
		chunk, err := c.br.ReadSlice('\n')
		if len(l.head) < len(c.head) {
			l.head = c.head[:len(l.head)+copy(c.head[len(l.head):], chunk)]
		}
		l.n += len(chunk)
		if len(chunk) >= len(l.tail) {
			l.tn = copy(l.tail[:], chunk[len(chunk)-len(l.tail):])
		} else {
			keep := min(l.tn, len(l.tail)-len(chunk))
			copy(l.tail[:], l.tail[l.tn-keep:l.tn])
			l.tn = keep + copy(l.tail[keep:], chunk)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && l.n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return l, err
	}
}

// literalSize parses the literal announced at the end of a line: "{N}"
// or "{N+}" before CRLF (or a bare LF). It returns -1 for a line that
// announces none.
func literalSize(end []byte) (int64, error) {
	b := trimCRLF(end)
	if len(b) < 3 || b[len(b)-1] != '}' {
		return -1, nil
	}
	open := -1
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '{' {
			open = i
			break
		}
	}
	if open < 0 {
		return -1, nil
	}
	digits := b[open+1 : len(b)-1]
	if len(digits) > 0 && digits[len(digits)-1] == '+' {
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		return -1, nil
	}
	var size int64
	for _, d := range digits {
		if d < '0' || d > '9' {
			return -1, nil
		}
		size = size*10 + int64(d-'0')
		if size > maxLiteral {
			return -1, fmt.Errorf("literal of more than %d bytes announced", int64(maxLiteral))
		}
	}
	return size, nil
}

// progressReader reads from the connection and pushes its read deadline
// forward while bytes keep arriving, so that a long FETCH is bounded by
// silence, not by its total length. Once cancelled (the operation's
// context is done) it never pushes the deadline again.
type progressReader struct {
	conn net.Conn // TCP, or TLS over it; read and changed by the client's goroutine only
	// raw is the TCP connection, never changed: cancel, which runs on
	// another goroutine, sets its deadline (a TLS connection's deadline
	// is that of the connection under it).
	raw       net.Conn
	timeout   time.Duration
	next      time.Time // when to push the deadline again
	cancelled atomic.Bool
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.conn.Read(b)
	if n > 0 {
		if now := time.Now(); now.After(p.next) {
			p.conn.SetReadDeadline(now.Add(p.timeout))
			p.next = now.Add(p.timeout / 8)
			if p.cancelled.Load() { // cancel ran while we pushed
				p.raw.SetDeadline(time.Unix(1, 0))
			}
		}
	}
	return n, err
}

// cancel interrupts the connection's pending and future reads and writes
// until the next operation begins.
func (p *progressReader) cancel() {
	p.cancelled.Store(true)
	p.raw.SetDeadline(time.Unix(1, 0)) // in the past: blocked calls return at once
}

// quote makes an IMAP quoted string. CR, LF and NUL cannot be quoted.
func quote(s string) (string, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", errors.New("contains CR, LF or NUL, which a quoted string cannot carry")
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String(), nil
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// splitWord returns the first space-separated word of a line and the rest
// of it without the line ending.
func splitWord(b []byte) (word, rest []byte) {
	b = trimCRLF(b)
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

func isWord(b []byte, w string) bool { return bytes.EqualFold(b, []byte(w)) }

// parseNumber parses a message number or count: digits only.
func parseNumber(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}

func trimCRLF(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}
