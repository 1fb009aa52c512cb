package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// UpstreamTLS says how imapgate secures its connection to the upstream.
type UpstreamTLS string

// Upstream TLS modes.
const (
	UpstreamPlaintext UpstreamTLS = "none"     // trusted network only
	UpstreamSTARTTLS  UpstreamTLS = "starttls" // default
	UpstreamImplicit  UpstreamTLS = "implicit"
)

// LoginMethod says which command logs in to the upstream.
type LoginMethod string

// Login methods.
const (
	LoginAuto  LoginMethod = "auto"  // AUTHENTICATE PLAIN when offered, else LOGIN
	LoginPlain LoginMethod = "plain" // AUTHENTICATE PLAIN only
	LoginLogin LoginMethod = "login" // LOGIN only
)

// ForwardMode says how the client's address reaches the upstream.
type ForwardMode string

// Forward modes.
const (
	ForwardNone    ForwardMode = "none"
	ForwardID      ForwardMode = "id"       // ID ("x-originating-ip" ...), honoured by Dovecot from login_trusted_networks
	ForwardProxyV2 ForwardMode = "proxy-v2" // a PROXY protocol v2 header before the first byte
)

// Upstream login errors. Callers map them to the client's answer with
// errors.Is; the upstream's own text is never shown to the client.
var (
	// ErrBadCredentials: the upstream refused the user's credentials.
	ErrBadCredentials = errors.New("upstream rejected the credentials")
	// ErrUnavailable: the upstream could not be reached, was too slow, or
	// said it was unavailable.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrUpstreamProtocol: the upstream did something unsafe or broken
	// (PREAUTH, STARTTLS injection, garbage). Also wraps ErrUnavailable.
	ErrUpstreamProtocol = errors.New("upstream protocol violation")
	// ErrNoAnswer: the credential went to the upstream, but no answer came
	// back (LoginTimeout passed, the connection dropped, or ctx ended).
	// The upstream may well have judged it, so it counts as a failed
	// attempt, not as an outage (README, "Brute force and password
	// spraying"). It does not wrap ErrUnavailable: everything that fails
	// before the credential is sent does, and only that is given back.
	ErrNoAnswer = errors.New("no answer from the upstream after the credential was sent")
)

// maxUpstreamLine caps a response line from the upstream during login, and
// maxUpstreamLiteral a literal inside one.
const (
	maxUpstreamLine    = 64 << 10
	maxUpstreamLiteral = 64 << 10
)

// Upstream describes the legacy server and how to log in to it.
// The zero value is not useful: Address is required.
type Upstream struct {
	// Address is "host:port". Required.
	Address string
	// TLS is the transport security. Empty means UpstreamSTARTTLS.
	TLS UpstreamTLS
	// TLSConfig verifies the upstream (CA file, system roots or a pin).
	// Required unless TLS is UpstreamPlaintext.
	TLSConfig *tls.Config
	// Method picks the login command. Empty means LoginAuto.
	Method LoginMethod
	// Forward says how to tell the upstream the client's address.
	// Empty means ForwardNone.
	Forward ForwardMode
	// ConnectTimeout bounds everything before the credential is sent:
	// dial, PROXY header, TLS, greeting, STARTTLS, CAPABILITY and ID.
	// Failing there is ErrUnavailable. Zero means 10s.
	ConnectTimeout time.Duration
	// LoginTimeout bounds the wait for the upstream's answer once the
	// credential is on the wire (and for the CAPABILITY that may follow a
	// successful login). Failing there is ErrNoAnswer. It should outlast
	// the longest delay the upstream puts on a login (Dovecot 2.3: a
	// per-IP auth penalty of up to 15s plus auth_failure_delay, 2s).
	// Zero means DefaultLoginTimeout.
	LoginTimeout time.Duration
	// SourceAddrs spreads connections over these local addresses, round
	// robin, skipping one whose ephemeral ports are exhausted. One source
	// address reaches one upstream address with about 28,000 connections.
	// Empty means the system's choice.
	SourceAddrs []netip.Addr
	// Dialer dials the upstream. If nil, a net.Dialer is used.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// ObserveLogin, if set, is told how long each Login took and how it
	// ended (metrics: upstream login latency).
	ObserveLogin func(d time.Duration, err error)

	nextSource atomic.Uint64
	failures   answerEstimate // how long the upstream takes to say NO
}

// DefaultLoginTimeout is the LoginTimeout used when it is zero: Dovecot
// 2.3's longest auth penalty (15s) plus its auth_failure_delay (2s), with
// room for a busy auth process.
const DefaultLoginTimeout = 30 * time.Second

// ClientInfo describes the client on whose behalf imapgate logs in.
type ClientInfo struct {
	Addr    *net.TCPAddr // the client's address
	Local   *net.TCPAddr // the proxy address the client connected to
	Session string       // the session id
}

// UpstreamConn is an upstream connection, logged in and ready for the relay.
type UpstreamConn struct {
	Conn net.Conn
	// R holds bytes the upstream sent after its tagged OK; the relay must
	// copy them to the client first.
	R *bufio.Reader
	// Capabilities are the upstream's post-login capabilities.
	Capabilities []string
}

// upstreamClient runs one upstream login exchange.
type upstreamClient struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	tag  int
	caps []string
	// capsSeen is set whenever caps is replaced by what the server said,
	// so login can tell whether its answer brought capabilities.
	capsSeen bool
	// onCredential is called just before the first byte of the password
	// is written; from then on an I/O error is ErrNoAnswer.
	onCredential func()
	credential   bool // the password is (partly) on the wire
}

// connectTimeout bounds a login up to its credential, or a probe:
// ConnectTimeout, or 10s.
func (u *Upstream) connectTimeout() time.Duration {
	if u.ConnectTimeout > 0 {
		return u.ConnectTimeout
	}
	return 10 * time.Second
}

// loginTimeout bounds the wait for the answer to the credential.
func (u *Upstream) loginTimeout() time.Duration {
	if u.LoginTimeout > 0 {
		return u.LoginTimeout
	}
	return DefaultLoginTimeout
}

// connDeadline moves a connection's deadline from phase to phase while
// a context's end can break it at any time: once ctx is done, no later
// phase may set a deadline that would outlive it.
type connDeadline struct {
	mu    sync.Mutex
	conn  net.Conn
	ended bool
}

// set sets the deadline, unless ctx has already ended.
func (d *connDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ended {
		d.conn.SetDeadline(t)
	}
}

// end breaks every read and write in progress or to come.
func (d *connDeadline) end() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ended = true
	d.conn.SetDeadline(time.Unix(1, 0))
}

// Login connects to the upstream and logs in as user. On success the
// connection is handed over for relaying; the password is forgotten.
//
// Until the credential is sent, ConnectTimeout bounds the exchange and
// any failure is ErrUnavailable (the upstream never saw the credential);
// from then on LoginTimeout bounds it, and a timeout, a dropped
// connection or the end of ctx is ErrNoAnswer.
func (u *Upstream) Login(ctx context.Context, user, password string, client ClientInfo) (uc *UpstreamConn, err error) {
	start := time.Now()
	if u.ObserveLogin != nil {
		defer observeLogin(u.ObserveLogin, start, &err)
	}
	defer u.noteFailureTime(start, &err)
	connectCtx, cancel := context.WithTimeout(ctx, u.connectTimeout())
	defer cancel()

	conn, err := u.dial(connectCtx)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrUnavailable, u.Address, err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	// The connect deadline bounds the exchange up to the credential, the
	// login deadline the rest; the end of ctx (shutdown) breaks either.
	dl := &connDeadline{conn: conn}
	deadline, _ := connectCtx.Deadline()
	dl.set(deadline)
	stop := context.AfterFunc(ctx, dl.end)
	defer stop()

	if u.Forward == ForwardProxyV2 {
		if _, err := conn.Write(proxyV2Header(client)); err != nil {
			return nil, unavailable("write PROXY header", err)
		}
	}
	if u.TLS == UpstreamImplicit {
		tc := tls.Client(conn, u.tlsConfig())
		if err := tc.HandshakeContext(connectCtx); err != nil {
			return nil, unavailable("TLS handshake", err)
		}
		conn = tc
	}
	c := &upstreamClient{conn: conn, r: bufio.NewReaderSize(conn, 4096), w: bufio.NewWriterSize(conn, 1024)}
	c.onCredential = func() { dl.set(time.Now().Add(u.loginTimeout())) }
	if err := c.greeting(); err != nil {
		return nil, err
	}
	if u.TLS == UpstreamSTARTTLS || u.TLS == "" {
		if err := c.startTLS(connectCtx, u.tlsConfig()); err != nil {
			return nil, err
		}
	}
	if c.caps == nil {
		if err := c.capability(); err != nil {
			return nil, err
		}
	}
	if u.Forward == ForwardID && c.has("ID") {
		if err := c.sendID(client); err != nil {
			return nil, err
		}
	}
	if err := c.login(u.Method, user, password); err != nil {
		return nil, err
	}
	if !c.capsSeen {
		// The pre-login list is stale (AUTH=, no post-login extensions):
		// ask (RFC 3501 7.1: the OK need not carry CAPABILITY).
		if err := c.capability(); err != nil {
			return nil, fmt.Errorf("after login: %w", err)
		}
	}
	conn.SetDeadline(time.Time{})
	if err := ctx.Err(); err != nil {
		return nil, unavailable("login", err)
	}
	ok = true
	return &UpstreamConn{Conn: c.conn, R: c.r, Capabilities: c.caps}, nil
}

// answerEstimate follows how long the upstream takes to answer a wrong
// password, the way TCP follows a round-trip time (RFC 6298): a smoothed
// mean and a smoothed mean deviation. A refused attempt, which never
// reaches the upstream, waits a draw from it so that it is answered
// when a real failure would be (README, "Brute force and password
// spraying"). The zero value knows nothing yet.
type answerEstimate struct {
	mu        sync.Mutex
	mean, dev time.Duration
	seen      bool
}

// observe adds one measured answer time.
func (e *answerEstimate) observe(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.seen {
		e.mean, e.dev, e.seen = d, d/4, true
		return
	}
	diff := d - e.mean
	e.dev += (abs(diff) - e.dev) / 4
	e.mean += diff / 8
}

// draw returns a plausible answer time: uniform over mean ± 2 mean
// deviations (for a uniform spread, as Dovecot's 500ms flush timer
// gives, that is the spread itself), never negative; 0 before any
// observation.
func (e *answerEstimate) draw() time.Duration {
	e.mu.Lock()
	mean, dev := e.mean, e.dev
	e.mu.Unlock()
	if dev > 0 {
		mean += time.Duration(rand.Int64N(int64(4*dev)+1)) - 2*dev
	}
	return max(mean, 0)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// KeepAnswerTimes carries what old has learnt about how long the server
// takes to answer a wrong password over to u, when both name the same
// address: a reload that keeps the upstream must not leave refusals
// answering at the tarpit alone until the next wrong password.
func (u *Upstream) KeepAnswerTimes(old *Upstream) {
	if old == nil || old == u || old.Address != u.Address {
		return
	}
	old.failures.mu.Lock()
	mean, dev, seen := old.failures.mean, old.failures.dev, old.failures.seen
	old.failures.mu.Unlock()
	u.failures.mu.Lock()
	u.failures.mean, u.failures.dev, u.failures.seen = mean, dev, seen
	u.failures.mu.Unlock()
}

// noteFailureTime, deferred by Login, learns from a login the upstream
// answered with a wrong-password NO how long such an answer takes.
func (u *Upstream) noteFailureTime(start time.Time, err *error) {
	if errors.Is(*err, ErrBadCredentials) {
		u.failures.observe(time.Since(start))
	}
}

// failureAnswerTime is a draw of how long this upstream has lately taken
// to answer bad credentials, counted from the start of Login; 0 until it
// has answered one.
func (u *Upstream) failureAnswerTime() time.Duration { return u.failures.draw() }

func (u *Upstream) dial(ctx context.Context) (net.Conn, error) {
	if u.Dialer != nil {
		return u.Dialer(ctx, "tcp", u.Address)
	}
	if len(u.SourceAddrs) == 0 {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Address)
	}
	start := u.nextSource.Add(1)
	var err error
	for i := range u.SourceAddrs {
		src := u.SourceAddrs[(start+uint64(i))%uint64(len(u.SourceAddrs))]
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", u.Address); err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, err
}

func (u *Upstream) tlsConfig() *tls.Config {
	if u.TLSConfig != nil {
		return u.TLSConfig
	}
	host, _, _ := net.SplitHostPort(u.Address)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

func noAnswer(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrNoAnswer, what, err)
}

// ioError classifies an I/O error of the login command: before the
// password was on the wire the upstream never saw the credential
// (ErrUnavailable); after, it may have judged it (ErrNoAnswer).
func (c *upstreamClient) ioError(what string, err error) error {
	if c.credential {
		return noAnswer(what, err)
	}
	return unavailable(what, err)
}

// sendingCredential marks the moment the password starts on its way.
func (c *upstreamClient) sendingCredential() {
	if c.credential {
		return
	}
	c.credential = true
	if c.onCredential != nil {
		c.onCredential()
	}
}

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrUpstreamProtocol, fmt.Sprintf(format, args...))
}

// greeting reads the server greeting.
func (c *upstreamClient) greeting() error {
	line, err := c.readResponse()
	if err != nil {
		return unavailable("greeting", err)
	}
	switch status, code, _ := imapwire.ParseStatus(line, "*"); status {
	case "OK":
		c.caps = imapwire.CapabilitiesFromCode(code)
		return nil
	case "PREAUTH":
		// A server that logs everyone in would make the proxy's
		// authentication meaningless.
		return protocolError("upstream greeted with PREAUTH")
	case "BYE":
		return unavailable("greeting", errors.New("upstream said BYE"))
	default:
		return protocolError("unexpected greeting %.40q", line)
	}
}

// startTLS upgrades the connection and re-reads capabilities.
func (c *upstreamClient) startTLS(ctx context.Context, cfg *tls.Config) error {
	if c.caps != nil && !c.has("STARTTLS") {
		return protocolError("upstream does not offer STARTTLS")
	}
	status, _, err := c.simple("STARTTLS")
	if err != nil {
		return err
	}
	if status != "OK" {
		return protocolError("upstream refused STARTTLS")
	}
	if c.r.Buffered() > 0 {
		// Bytes after the OK were sent in plaintext and would be read as if
		// they came over TLS: the CVE-2011-0411 injection.
		return protocolError("upstream sent %d bytes after STARTTLS OK", c.r.Buffered())
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return unavailable("STARTTLS handshake", err)
	}
	c.conn = tc
	c.r.Reset(tc)
	c.w.Reset(tc)
	c.caps = nil // RFC 3501 6.2.1: forget what was said before TLS
	return nil
}

// capability asks for the capabilities; the answer must list them.
func (c *upstreamClient) capability() error {
	c.caps = nil
	status, _, err := c.simple("CAPABILITY")
	if err != nil {
		return err
	}
	if status != "OK" || c.caps == nil {
		return protocolError("CAPABILITY failed")
	}
	return nil
}

// sendID tells the upstream who the client is (Dovecot's login_trusted_networks).
func (c *upstreamClient) sendID(ci ClientInfo) error {
	var b strings.Builder
	b.WriteString("ID (")
	if ci.Addr != nil {
		fmt.Fprintf(&b, `"x-originating-ip" "%s" "x-originating-port" "%d" `, ci.Addr.IP.String(), ci.Addr.Port)
	}
	if ci.Local != nil {
		fmt.Fprintf(&b, `"x-connected-ip" "%s" "x-connected-port" "%d" `, ci.Local.IP.String(), ci.Local.Port)
	}
	fmt.Fprintf(&b, `"x-session-id" "%s")`, ci.Session)
	_, _, err := c.simple(b.String())
	return err // a NO to ID is harmless
}

// login logs in with AUTHENTICATE PLAIN or LOGIN.
func (c *upstreamClient) login(method LoginMethod, user, password string) error {
	usePlain := c.has("AUTH=PLAIN")
	switch method {
	case LoginPlain:
		if !usePlain {
			return protocolError("upstream does not offer AUTH=PLAIN")
		}
	case LoginLogin:
		usePlain = false
	}
	var status, code string
	var err error
	c.capsSeen = false // from here, capabilities come from the login's answer
	if usePlain {
		status, code, err = c.authenticatePlain(user, password)
	} else {
		if c.has("LOGINDISABLED") {
			return protocolError("upstream offers neither AUTH=PLAIN nor LOGIN")
		}
		status, code, err = c.loginCommand(user, password)
	}
	if err != nil {
		return err
	}
	switch {
	case status == "OK":
		return nil
	case status == "NO" && strings.EqualFold(code, "UNAVAILABLE"):
		return unavailable("login", errors.New("upstream answered NO [UNAVAILABLE]"))
	case status == "NO":
		return fmt.Errorf("%w (code %q)", ErrBadCredentials, code)
	default:
		return protocolError("login answered %s", status)
	}
}

func (c *upstreamClient) authenticatePlain(user, password string) (status, code string, err error) {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	tag := c.nextTag()
	if c.has("SASL-IR") {
		c.sendingCredential()
		err = c.send(tag + " AUTHENTICATE PLAIN " + ir + "\r\n")
	} else {
		// The credential leaves only after the "+": until then the
		// exchange is still bounded by the connect timeout.
		err = c.send(tag + " AUTHENTICATE PLAIN\r\n")
		if err == nil {
			var line []byte
			line, err = c.readUntilContinuation(tag)
			if err == nil && line != nil {
				// Tagged answer instead of "+": the server refused outright.
				status, code, _ = imapwire.ParseStatus(line, tag)
				return status, code, nil
			}
			if err == nil {
				c.sendingCredential()
				err = c.send(ir + "\r\n")
			}
		}
	}
	if err != nil {
		return "", "", c.ioError("AUTHENTICATE", err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", c.ioError("AUTHENTICATE", err)
		}
		if len(line) > 0 && line[0] == '+' {
			// PLAIN has one step; a second challenge is broken. Cancel.
			if err := c.send("*\r\n"); err != nil {
				return "", "", c.ioError("AUTHENTICATE", err)
			}
			continue
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

func (c *upstreamClient) loginCommand(user, password string) (status, code string, err error) {
	tag := c.nextTag()
	// Each argument is quoted when it can be, else a literal. The
	// password is the credential: the login deadline starts with its
	// first byte (for a synchronizing literal, after the "+").
	args := []string{user, password}
	if err := c.sendString(tag + " LOGIN "); err != nil {
		return "", "", unavailable("LOGIN", err)
	}
	for i, a := range args {
		isPassword := i == 1
		if isPassword {
			c.sendString(" ")
		}
		if q, ok := quote(a); ok && isASCII(a) {
			if isPassword {
				c.sendingCredential()
			}
			if err := c.sendString(q); err != nil {
				return "", "", c.ioError("LOGIN", err)
			}
			continue
		}
		if c.has("LITERAL+") || (c.has("LITERAL-") && len(a) <= 4096) {
			if isPassword {
				c.sendingCredential()
			}
			c.sendString("{" + strconv.Itoa(len(a)) + "+}\r\n" + a)
			continue
		}
		if err := c.send("{" + strconv.Itoa(len(a)) + "}\r\n"); err != nil {
			return "", "", unavailable("LOGIN", err)
		}
		line, err := c.readUntilContinuation(tag)
		if err != nil {
			return "", "", unavailable("LOGIN", err)
		}
		if line != nil {
			status, code, _ = imapwire.ParseStatus(line, tag)
			return status, code, nil
		}
		if isPassword {
			c.sendingCredential()
		}
		c.sendString(a)
	}
	if err := c.send("\r\n"); err != nil {
		return "", "", c.ioError("LOGIN", err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", c.ioError("LOGIN", err)
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// readUntilContinuation reads until "+ ..." (returns nil) or the tagged
// answer (returns it).
func (c *upstreamClient) readUntilContinuation(tag string) ([]byte, error) {
	for {
		line, err := c.readResponse()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 && line[0] == '+' {
			return nil, nil
		}
		if _, _, ok := imapwire.ParseStatus(line, tag); ok {
			return line, nil
		}
		c.untagged(line)
	}
}

// simple sends "TAG cmd" and reads to its tagged answer, noting untagged
// CAPABILITY responses on the way.
func (c *upstreamClient) simple(cmd string) (status, code string, err error) {
	tag := c.nextTag()
	if err := c.send(tag + " " + cmd + "\r\n"); err != nil {
		return "", "", unavailable(cmd, err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", unavailable(firstWord(cmd), err)
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

func firstWord(s string) string {
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

func (c *upstreamClient) untagged(line []byte) {
	if caps, ok := bytes.CutPrefix(line, []byte("* CAPABILITY ")); ok {
		c.caps, c.capsSeen = strings.Fields(string(caps)), true
	}
}

func (c *upstreamClient) noteCapsFromCode(status, code string) {
	if status == "OK" {
		if caps := imapwire.CapabilitiesFromCode(code); caps != nil {
			c.caps, c.capsSeen = caps, true
		}
	}
}

func (c *upstreamClient) nextTag() string {
	c.tag++
	return "ig" + strconv.Itoa(c.tag)
}

func (c *upstreamClient) sendString(s string) error {
	_, err := c.w.WriteString(s)
	return err
}

func (c *upstreamClient) send(s string) error {
	if _, err := c.w.WriteString(s); err != nil {
		return err
	}
	return c.w.Flush()
}

// readResponse reads one response line, with any literals inlined, bounded
// by maxUpstreamLine and maxUpstreamLiteral.
func (c *upstreamClient) readResponse() ([]byte, error) {
	var out []byte
	for {
		line, err := readLine(c.r, maxUpstreamLine)
		if err != nil {
			return nil, err
		}
		out = append(out, line...)
		if len(out) > maxUpstreamLine {
			return nil, errLineTooLong
		}
		size, _, ok := imapwire.LiteralAtEnd(line)
		if !ok {
			return out, nil
		}
		if size > maxUpstreamLiteral {
			return nil, errLiteralTooBig
		}
		lit := make([]byte, size)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			return nil, err
		}
		out = append(out, "\r\n"...)
		out = append(out, lit...)
	}
}

func (c *upstreamClient) has(capability string) bool {
	for _, cp := range c.caps {
		if strings.EqualFold(cp, capability) {
			return true
		}
	}
	return false
}
