package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
	// back (LoginTimeout passed, the connection dropped, or ctx ended), or
	// none the proxy can read (BAD, an unknown status: then it also wraps
	// ErrUpstreamProtocol). The upstream may well have judged it, so it
	// counts as a failed attempt, not as an outage (README, "Brute force
	// and password spraying"). It does not wrap ErrUnavailable: everything
	// that fails before the credential is sent does, and only that is
	// given back.
	ErrNoAnswer = errors.New("no answer from the upstream after the credential was sent")

	// ErrMasterRejected: the upstream refused a master login (LoginAs)
	// with a NO that is not about the mailbox: the master user's name or
	// secret is wrong, or the upstream does not take this master form.
	// The client proved who it is to imapgate and sent no password the
	// upstream judged, so this is an operational error: nothing counts
	// against the client, and an admin must look. It wraps
	// ErrUnavailable, so a caller that knows no better answers
	// NO [UNAVAILABLE].
	ErrMasterRejected = fmt.Errorf("%w: the upstream rejected the master login", ErrUnavailable)
	// ErrMailboxRefused: the upstream accepted the master's credentials
	// but will not let it act for this mailbox, and said so with the
	// RFC 5530 code AUTHORIZATIONFAILED. Dovecot 2.3 with a master passdb
	// (pass = yes) answers this, with the same words, both for a mailbox
	// that does not exist and for one a deny passdb refuses: the two
	// cannot be told apart. A server that answers such a case without
	// the code gives ErrMasterRejected instead. It wraps ErrUnavailable;
	// like ErrMasterRejected it is not the client's failure.
	ErrMailboxRefused = fmt.Errorf("%w: the upstream refused the master access to the mailbox", ErrUnavailable)
	// ErrMailboxName: LoginAs was asked for a mailbox whose name the
	// master form cannot carry unchanged (empty, a control character
	// such as NUL, CR or LF, invalid UTF-8, or the form's separator);
	// nothing was sent. Retrying cannot help.
	ErrMailboxName = errors.New("mailbox name unfit for the master login")
	// ErrNoMaster: LoginAs was called on an Upstream without a usable
	// Master; nothing was sent. It wraps ErrUnavailable.
	ErrNoMaster = fmt.Errorf("%w: no usable master login configured", ErrUnavailable)
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
	// UserTemplate maps the name the client logged in with to the name
	// the upstream knows (README, [upstream] user_template): {user} is the
	// name as typed, {local} the part before its last "@" (all of it
	// when there is none) and {domain} the part after ("" when none).
	// `CORP\{local}` turns "alice@corp.example" into `CORP\alice`, the
	// form Exchange takes; "{local}@corp.example" makes a UPN of a bare
	// "alice". Only Login uses it: a master login (LoginAs) names the
	// mailbox as the credential store knows it. CheckUserTemplate says
	// what is accepted. Empty means the name as typed.
	UserTemplate string
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
	// ObserveLogin, if set, is told how long each Login or LoginAs took
	// and how it ended (metrics: upstream login latency). A master
	// login's errors are never ErrBadCredentials.
	ObserveLogin func(d time.Duration, err error)
	// Master is the login LoginAs uses for clients that never sent the
	// real password (an app password, a token, SCRAM, a certificate).
	// Login, with the client's own password, never uses it. If nil,
	// LoginAs fails with ErrNoMaster.
	Master *MasterLogin

	nextSource atomic.Uint64
	// buffers holds the readers (4 KiB) and writers (1 KiB) of finished
	// exchanges.
	buffers  bufPool
	failures answerEstimate // how long the upstream takes to say NO
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

	// bufs is R's, which goes back to its pool (dropReader).
	bufs *bufPair
}

// dropReader gives R's buffer back for the next login, once the caller
// has copied the bytes R holds; R is nil afterwards. A caller that never
// calls it leaves R to the garbage collector.
func (uc *UpstreamConn) dropReader() {
	if uc.bufs != nil {
		uc.bufs.release()
	}
	uc.R, uc.bufs = nil, nil
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

// connect dials the upstream and brings the connection to where the next
// command may be sent: the PROXY v2 header (for client; a LOCAL one
// without its addresses), implicit TLS, the greeting and STARTTLS (which
// refuses bytes injected after its OK). The capabilities the greeting
// listed are kept, unless STARTTLS dropped them. Every failure is
// ErrUnavailable: no credential has been sent.
//
// The connection's deadline is ConnectTimeout from now until the caller
// moves it with c.deadline.set; the end of ctx breaks the connection at
// any time until c.release.
func (u *Upstream) connect(ctx context.Context, client ClientInfo) (_ *upstreamClient, err error) {
	connectCtx, cancel := context.WithTimeout(ctx, u.connectTimeout())
	defer cancel()
	conn, err := u.dial(connectCtx)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrUnavailable, u.Address, err)
	}
	dl := &connDeadline{conn: conn}
	deadline, _ := connectCtx.Deadline()
	dl.set(deadline)
	c := &upstreamClient{transport: conn, deadline: dl, stopWatching: context.AfterFunc(ctx, dl.end)}
	defer func() {
		if err != nil {
			c.release(false)
		}
	}()

	if u.Forward == ForwardProxyV2 {
		if _, err := conn.Write(proxyV2Header(client)); err != nil {
			return nil, unavailable("write PROXY header", err)
		}
	}
	if u.TLS == UpstreamImplicit {
		tc := tls.Client(newUpstreamSocket(conn), u.tlsConfig())
		if err := tc.HandshakeContext(connectCtx); err != nil {
			return nil, unavailable("TLS handshake", err)
		}
		conn = tc
	}
	c.transport, c.conn = conn, conn
	c.bufs = u.buffers.get(conn, conn, 4096, 1024)
	c.r, c.w = c.bufs.r, c.bufs.w
	if err := c.greeting(); err != nil {
		return nil, err
	}
	if u.TLS == UpstreamSTARTTLS || u.TLS == "" {
		if err := c.startTLS(connectCtx, u.tlsConfig()); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Login connects to the upstream and logs in as user with the client's
// own password (pass-through). On success the connection is handed over
// for relaying; the password is forgotten.
//
// Until the credential is sent, ConnectTimeout bounds the exchange and
// any failure is ErrUnavailable (the upstream never saw the credential);
// from then on LoginTimeout bounds it, and a timeout, a dropped
// connection or the end of ctx is ErrNoAnswer. A NO is ErrBadCredentials,
// and how long it took teaches the estimate refusals wait for.
func (u *Upstream) Login(ctx context.Context, user, password string, client ClientInfo) (uc *UpstreamConn, err error) {
	start := time.Now()
	defer u.noteFailureTime(start, &err)
	return u.login(ctx, start, client, loginCredential{authcid: u.UpstreamUser(user), password: password}, clientAnswer)
}

// UpstreamUser is the name Login sends for a client's user name: the
// UserTemplate filled in, or user itself without one.
func (u *Upstream) UpstreamUser(user string) string {
	if u.UserTemplate == "" {
		return user
	}
	local, domain := user, ""
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		local, domain = user[:i], user[i+1:]
	}
	return strings.NewReplacer("{user}", user, "{local}", local, "{domain}", domain).Replace(u.UserTemplate)
}

// CheckUserTemplate reports what makes tmpl unusable as a UserTemplate:
// it must name {user} or {local} (else every client would log in as one
// account), and its braces may only be those of {user}, {local} and
// {domain}. The empty template is fine.
func CheckUserTemplate(tmpl string) error {
	if tmpl == "" {
		return nil
	}
	if !strings.Contains(tmpl, "{user}") && !strings.Contains(tmpl, "{local}") {
		return fmt.Errorf("%q names neither {user} nor {local}: every client would log in as the same account", tmpl)
	}
	rest := strings.NewReplacer("{user}", "", "{local}", "", "{domain}", "").Replace(tmpl)
	if strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("%q: only {user}, {local} and {domain} may appear in braces", tmpl)
	}
	if strings.IndexFunc(rest, func(r rune) bool { return r == ' ' || r == '"' || r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("%q holds a space, a quote or a control character", tmpl)
	}
	return nil
}

// login is the exchange Login and LoginAs share: connect, CAPABILITY, ID,
// the credential, the post-login CAPABILITY. judge turns the upstream's
// answer to the credential into the caller's error.
func (u *Upstream) login(ctx context.Context, start time.Time, client ClientInfo, cred loginCredential, judge func(status, code string) error) (uc *UpstreamConn, err error) {
	if u.ObserveLogin != nil {
		defer observeLogin(u.ObserveLogin, start, &err)
	}
	c, err := u.connect(ctx, client)
	if err != nil {
		return nil, connectFailed(err) // an UpstreamGroup may try its next address
	}
	defer func() { c.release(err == nil) }()
	// The connect deadline bounds the exchange up to the credential, the
	// login deadline the rest; the end of ctx (shutdown) breaks either.
	c.onCredential = func() { c.deadline.set(time.Now().Add(u.loginTimeout())) }
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
	status, code, err := c.login(u.Method, cred)
	if err != nil {
		return nil, err
	}
	if err := judge(status, code); err != nil {
		return nil, err
	}
	if !c.capsSeen {
		// The pre-login list is stale (AUTH=, no post-login extensions):
		// ask (RFC 3501 7.1: the OK need not carry CAPABILITY).
		if err := c.capability(); err != nil {
			return nil, fmt.Errorf("after login: %w", err)
		}
	}
	c.conn.SetDeadline(time.Time{})
	if err := ctx.Err(); err != nil {
		return nil, unavailable("login", err)
	}
	uc = &UpstreamConn{Conn: c.conn, R: c.r, Capabilities: c.caps, bufs: c.bufs}
	c.bufs = nil // the caller's now (dropReader)
	return uc, nil
}

// clientAnswer judges the upstream's answer to the client's own password.
func clientAnswer(status, code string) error {
	switch {
	case status == "OK":
		return nil
	case status == "NO" && codeIs(code, "UNAVAILABLE"):
		return unavailable("login", errors.New("upstream answered NO [UNAVAILABLE]"))
	case status == "NO":
		return fmt.Errorf("%w (code %q)", ErrBadCredentials, code)
	default:
		// The credential is on the wire: whatever the upstream made of
		// it, a guess it answers BAD must not be free.
		return fmt.Errorf("%w: %w: login answered %.20q", ErrNoAnswer, ErrUpstreamProtocol, status)
	}
}

// codeIs reports whether a response code (the inside of "[...]") is name.
func codeIs(code, name string) bool {
	return strings.EqualFold(firstWord(code), name)
}

// observeLogin reports a finished Login to f; it is deferred by Login.
func observeLogin(f func(time.Duration, error), start time.Time, err *error) {
	f(time.Since(start), *err)
}

// Probe checks that the upstream answers as Login would find it: it dials,
// runs TLS (implicit or STARTTLS, with the same verification), reads the
// greeting and logs out, without any credential. Health checks call it
// every few seconds; it costs one connection and no login. With
// ForwardProxyV2 the header is a LOCAL one: the upstream expects a header,
// and this connection speaks for nobody.
func (u *Upstream) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.connectTimeout())
	defer cancel()
	c, err := u.connect(ctx, ClientInfo{})
	if err != nil {
		return err
	}
	defer c.release(false)
	if err := ctx.Err(); err != nil {
		return unavailable("probe", err)
	}
	// A polite LOGOUT; its answer does not matter.
	c.send("p LOGOUT\r\n")
	return nil
}

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

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrUpstreamProtocol, fmt.Sprintf(format, args...))
}
