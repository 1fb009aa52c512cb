package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
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
