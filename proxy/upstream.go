package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/auth"
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
		tc := tls.Client(conn, u.tlsConfig())
		if err := tc.HandshakeContext(connectCtx); err != nil {
			return nil, unavailable("TLS handshake", err)
		}
		conn = tc
	}
	c.transport, c.conn = conn, conn
	c.r, c.w = bufio.NewReaderSize(conn, 4096), bufio.NewWriterSize(conn, 1024)
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
	return u.login(ctx, start, client, loginCredential{authcid: user, password: password}, clientAnswer)
}

// LoginAs connects to the upstream and logs in to mailbox as the Master
// user, for a client that proved who it is to imapgate without the
// mailbox's password. Connecting, ID, the timeouts, ErrUnavailable and
// ErrNoAnswer are those of Login: the master's secret is the credential
// whose first byte starts LoginTimeout. The answer is judged otherwise:
//   - a NO with the code AUTHORIZATIONFAILED is ErrMailboxRefused;
//   - any other NO (but NO [UNAVAILABLE]) is ErrMasterRejected;
//   - a mailbox the form cannot carry is ErrMailboxName, and a missing or
//     broken Master ErrNoMaster, before anything is dialled.
//
// None of these is the client's failure, and a master login's answer time
// never feeds the estimate that refusals of client guesses wait for.
// ErrNoAnswer here is no client guess either: the caller must not count
// it against the client.
func (u *Upstream) LoginAs(ctx context.Context, mailbox string, client ClientInfo) (*UpstreamConn, error) {
	if err := u.CheckMaster(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoMaster, err)
	}
	cred, err := u.Master.credential(mailbox)
	if err != nil {
		return nil, err
	}
	return u.login(ctx, time.Now(), client, cred, masterAnswer)
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
		return nil, err
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
	return &UpstreamConn{Conn: c.conn, R: c.r, Capabilities: c.caps}, nil
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
		return protocolError("login answered %s", status)
	}
}

// masterAnswer judges the upstream's answer to a master login: a NO is
// about the master or about the mailbox, never about the client.
func masterAnswer(status, code string) error {
	switch {
	case status == "NO" && codeIs(code, "AUTHORIZATIONFAILED"):
		return fmt.Errorf("%w (code %q)", ErrMailboxRefused, code)
	case status == "NO" && !codeIs(code, "UNAVAILABLE"):
		return fmt.Errorf("%w (code %q)", ErrMasterRejected, code)
	default:
		return clientAnswer(status, code)
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

// noteFailureTime, deferred by Login (never by LoginAs: a master login's
// NO is no answer to a client's guess), learns from a login the upstream
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

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrUpstreamProtocol, fmt.Sprintf(format, args...))
}

// MasterForm says how a master login names the mailbox it acts for.
type MasterForm string

// Master login forms. For master user "svc", mailbox "alice" and the
// default separators, the upstream receives:
//
//	sasl-authzid       AUTHENTICATE PLAIN, authzid "alice", authcid "svc", the master's secret
//	dovecot-login      user "alice*svc" with the master's secret (AUTHENTICATE PLAIN or LOGIN)
//	exchange-delegate  user `CORP\svc\alice` with the master's password (LOGIN or AUTHENTICATE PLAIN)
const (
	// MasterSASLAuthzid is AUTHENTICATE PLAIN with the mailbox as the
	// authorization identity and the master as the authentication
	// identity (RFC 4616 section 2): Dovecot's master passdb takes it
	// (tested against Dovecot 2.3), and so does Cyrus for a user listed
	// in its proxyservers (not tested here). It needs AUTH=PLAIN: LOGIN
	// cannot carry an authorization identity. The names are fields of
	// their own, so no separator needs refusing; NUL, which separates
	// PLAIN's fields, is refused in a mailbox like every control
	// character.
	MasterSASLAuthzid MasterForm = "sasl-authzid"
	// MasterDovecotLogin is the single user name mailbox + Separator +
	// master (Dovecot's auth_master_user_separator, "*" by default; the
	// UW-IMAP convention). Dovecot 2.3 splits the name at the first
	// separator, so a mailbox holding one would change which master is
	// asked: such a mailbox is refused.
	MasterDovecotLogin MasterForm = "dovecot-login"
	// MasterExchangeDelegate is Exchange's access to another mailbox:
	// the user name [Domain + Separator +] master + Separator + mailbox,
	// with the master account's own password, the mailbox last. Field
	// reports differ on the separator and on the domain part, hence
	// Separator and Domain. Like dovecot-login it goes through LOGIN or
	// AUTHENTICATE PLAIN as Upstream.Method says (auto: PLAIN when
	// offered); LoginLogin forces LOGIN, the command field reports use.
	// Unverified against a real Exchange here: only the bytes on the
	// wire are tested.
	MasterExchangeDelegate MasterForm = "exchange-delegate"
)

// MasterLogin is how imapgate logs in to the upstream as a master user on
// behalf of a mailbox (Upstream.LoginAs). A master user can open every
// mailbox the upstream lets it: its secret is worth every password of
// the server, and belongs in a file only imapgate reads.
//
// The form is a fixed order of named parts joined by one separator,
// rather than a free template: with the mailbox always a whole part and
// the separator refused inside it (and inside User and Domain), the name
// on the wire splits back into exactly the parts configured, whatever a
// client's mailbox name holds.
type MasterLogin struct {
	// User is the master user's name as the upstream knows it. Required.
	// For exchange-delegate without Domain it may be a UPN
	// ("svc@corp.example").
	User string
	// Secret is the master user's password. Required. It must not hold
	// NUL, CR or LF (PLAIN cannot carry a NUL; a secret file's final
	// newline is not part of the secret).
	Secret Secret
	// Form is how the mailbox is named. Empty means MasterSASLAuthzid.
	Form MasterForm
	// Separator joins the parts of the dovecot-login and exchange-delegate
	// forms; User, Domain and every mailbox must not contain it. Empty
	// means "*" for dovecot-login and `\` for exchange-delegate. It must
	// be empty for sasl-authzid, which has none.
	Separator string
	// Domain, for exchange-delegate only, is the first part: "CORP" gives
	// `CORP\svc\alice`. Empty means none: `svc\alice` (or
	// `svc@corp.example\alice`).
	Domain string
}

// form is Form with its default.
func (m *MasterLogin) form() MasterForm {
	if m.Form == "" {
		return MasterSASLAuthzid
	}
	return m.Form
}

// separator is Separator with the form's default; "" for sasl-authzid.
func (m *MasterLogin) separator() string {
	switch {
	case m.Separator != "":
		return m.Separator
	case m.form() == MasterDovecotLogin:
		return "*"
	case m.form() == MasterExchangeDelegate:
		return `\`
	}
	return ""
}

// Check reports what makes m unusable, nil if nothing: a missing user or
// secret, an unknown form, a separator where the form has none, a
// control character, or the separator inside User or Domain.
func (m *MasterLogin) Check() error {
	form := m.form()
	switch form {
	case MasterSASLAuthzid, MasterDovecotLogin, MasterExchangeDelegate:
	default:
		return fmt.Errorf("master form %q is not one of %s, %s, %s", m.Form, MasterSASLAuthzid, MasterDovecotLogin, MasterExchangeDelegate)
	}
	if form == MasterSASLAuthzid && m.Separator != "" {
		return fmt.Errorf("master form %s has no separator: remove separator %q", form, m.Separator)
	}
	if form != MasterExchangeDelegate && m.Domain != "" {
		return fmt.Errorf("master domain %q is only used by the %s form", m.Domain, MasterExchangeDelegate)
	}
	if err := auth.CheckUsername(m.User); err != nil {
		return fmt.Errorf("master user %q: empty, too long or with a control character", m.User)
	}
	secret := m.Secret.Reveal()
	if secret == "" {
		return errors.New("master secret is empty")
	}
	if len(secret) > auth.MaxPasswordLength || strings.ContainsAny(secret, "\x00\r\n") {
		return fmt.Errorf("master secret is over %d bytes or holds NUL, CR or LF", auth.MaxPasswordLength)
	}
	sep := m.separator()
	if sep == "" {
		return nil
	}
	if strings.IndexFunc(sep, func(r rune) bool { return r == ' ' || !auth.AllowedInUsername(r) }) >= 0 {
		return fmt.Errorf("master separator %q holds a space or a control character", sep)
	}
	if strings.Contains(m.User, sep) {
		return fmt.Errorf("master user %q contains the separator %q", m.User, sep)
	}
	if m.Domain != "" {
		if err := auth.CheckUsername(m.Domain); err != nil || strings.Contains(m.Domain, sep) {
			return fmt.Errorf("master domain %q contains the separator %q or a control character", m.Domain, sep)
		}
	}
	return nil
}

// CheckMaster reports whether Master can be used with this upstream: nil
// for a nil Master or a good one. sasl-authzid needs AUTHENTICATE PLAIN,
// so Method LoginLogin cannot carry it. Config checks call it; LoginAs
// does too, before it dials.
func (u *Upstream) CheckMaster() error {
	if u.Master == nil {
		return errors.New("no master login configured")
	}
	if err := u.Master.Check(); err != nil {
		return err
	}
	if u.Master.form() == MasterSASLAuthzid && u.Method == LoginLogin {
		return fmt.Errorf("master form %s needs AUTHENTICATE PLAIN: the login method %q cannot carry an authorization identity", MasterSASLAuthzid, LoginLogin)
	}
	return nil
}

// credential is what LoginAs sends for mailbox, or ErrMailboxName for a
// name the form cannot carry: one auth.CheckUsername refuses (empty, a
// control character such as NUL, CR or LF, invalid UTF-8, too long) or
// one holding the separator.
func (m *MasterLogin) credential(mailbox string) (loginCredential, error) {
	if err := auth.CheckUsername(mailbox); err != nil {
		return loginCredential{}, fmt.Errorf("%w: %w", ErrMailboxName, err)
	}
	secret := m.Secret.Reveal()
	sep := m.separator()
	if sep != "" && strings.Contains(mailbox, sep) {
		return loginCredential{}, fmt.Errorf("%w: %q contains the %s separator %q", ErrMailboxName, mailbox, m.form(), sep)
	}
	switch m.form() {
	case MasterDovecotLogin:
		return loginCredential{authcid: mailbox + sep + m.User, password: secret}, nil
	case MasterExchangeDelegate:
		name := m.User + sep + mailbox
		if m.Domain != "" {
			name = m.Domain + sep + name
		}
		return loginCredential{authcid: name, password: secret}, nil
	default:
		return loginCredential{authzid: mailbox, authcid: m.User, password: secret}, nil
	}
}

// Secret is a password that never shows: every fmt verb (%v, %+v, %#v,
// %s, %q, %x ...), log/slog, encoding/json and encoding.TextMarshaler
// users render it as "[secret]", so a struct holding one can be printed
// or logged whole. Reveal gives the value, for the wire only. The zero
// value is the empty secret.
type Secret struct{ value string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Reveal returns the secret itself: only to send it to the upstream.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

const redacted = "[secret]"

// String hides the secret.
func (Secret) String() string { return redacted }

// GoString hides the secret from %#v.
func (Secret) GoString() string { return "proxy.Secret(" + redacted + ")" }

// Format hides the secret from every fmt verb, %d and %x included.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, redacted)
}

// LogValue hides the secret from log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON hides the secret from encoding/json.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText hides the secret from text encoders (TOML, XML, slog's
// text handler on a struct).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
