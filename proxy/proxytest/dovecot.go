// Package proxytest starts a real Dovecot for integration tests, the way
// net/http/httptest starts an HTTP server:
//
//	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 50})
//	c, err := imapclient.DialInsecure(d.Addr, nil)
//	// ... drive the proxy against d.Addr or d.ImplicitAddr ...
//	if n := d.AuthAttempts().Failure; n != 0 {
//		t.Errorf("%d failed logins reached Dovecot, want 0", n)
//	}
//
// Each Dovecot runs as its own master process ("dovecot -F") from a
// configuration generated in a fresh temporary directory, listens on free
// loopback ports only, and is stopped by t.Cleanup. Neither the system's
// Dovecot service nor anything under /etc is used.
//
// Programs that are not tests (load tools) use NewDovecot and Close:
//
//	d, err := proxytest.NewDovecot(proxytest.DovecotOptions{Users: proxytest.NumberedUsers(2000, "pass"), Messages: 2000, MessageSize: 50_000})
//	if err != nil { return err }
//	defer d.Close()
//
// The configuration needs Dovecot 2.3 (Debian 12's dovecot-imapd). When
// dovecot is not installed the test is skipped, unless CI=true, where a
// missing tool fails the test instead: .ci/run installs it.
package proxytest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DovecotOptions configures StartDovecot and NewDovecot. The zero value is a Dovecot with
// the default users, empty mailboxes, AUTH=PLAIN and AUTH=LOGIN, and no
// trusted networks.
type DovecotOptions struct {
	// Users maps user names to passwords. If nil, DefaultUsers() is used.
	// Names are limited to Dovecot's default auth_username_chars
	// (letters, digits and ".-_@").
	Users map[string]string

	// Messages is the number of messages written into the INBOX of user1
	// (or of the first user in sorted order when there is no user1) before
	// Dovecot starts. Each has distinct Message-ID and realistic headers;
	// see MakeMessage.
	Messages int

	// MessageSize is the approximate size in bytes of each pre-generated
	// message. If zero, 2048 is used.
	MessageSize int

	// OtherUsersMessages is the number of messages of about 1 KB written
	// into the INBOX of every user but the one that gets Messages, so that
	// load spread over thousands of users finds mail everywhere. If zero,
	// their INBOX is empty (Dovecot creates it at first login).
	OtherUsersMessages int

	// MaxSessions is how many logged-in sessions Dovecot serves at once
	// (service imap process_limit: one process each); the login and
	// client limits are raised with it. If zero, 5000 is used. Dovecot
	// runs with its soft file limit raised to the hard one, which must
	// allow a few open files per session.
	MaxSessions int

	// LoginOnly makes a server that does not advertise AUTH=PLAIN, on any
	// port, before or after TLS, while the LOGIN command (and AUTHENTICATE
	// LOGIN) still works; AUTHENTICATE PLAIN is refused with NO.
	//
	// Dovecot 2.3 alone cannot do this: its imap-login runs the LOGIN
	// command through the PLAIN mechanism, so auth_mechanisms = login
	// also disables LOGIN (the capability then says LOGINDISABLED). A
	// LoginOnly server therefore puts a small relay in front of Dovecot
	// for the pre-authentication phase; see loginonly.go. Set
	// AuthMechanisms = "login" instead for Dovecot's own behaviour.
	LoginOnly bool

	// TrustedNetworks is Dovecot's login_trusted_networks (for example
	// "127.0.0.0/8"): clients from there may set their address with
	// ID ("x-originating-ip" ...), and Dovecot then keys its auth
	// penalty (AuthPenalty) on that address instead of the connection's.
	// If empty, no network is trusted.
	TrustedNetworks string

	// HAProxyTrustedNetworks is Dovecot's haproxy_trusted_networks (for
	// example "127.0.0.1/32"), and setting it adds a third listener,
	// HAProxyAddr (inet_listener with haproxy = yes), on which every
	// connection must start with a PROXY header (v1 or v2) from one of
	// these networks: Dovecot then takes the header's source as the
	// client's address (rip), for its log and its auth penalty. The other
	// listeners take no header. If empty, there is no such listener.
	HAProxyTrustedNetworks string

	// AuthMechanisms is Dovecot's auth_mechanisms. If empty, "plain login"
	// is used.
	AuthMechanisms string

	// IdleCheckInterval is Dovecot's mailbox_idle_check_interval: how
	// often a session in IDLE looks for new mail by itself. Dovecot also
	// learns of changes at once through inotify, but only while the mail
	// user has inotify instances left (fs.inotify.max_user_instances,
	// 128 by default, shared by every Dovecot of the machine, one per
	// session in IDLE): under load it falls back to this interval. Whole
	// seconds, at least one. If zero, one second: every Dovecot of a test
	// run shares those instances, so under parallel tests the fallback
	// decides when IDLE sees new mail, and 30s (Dovecot's default) would
	// outlast a test's patience.
	IdleCheckInterval time.Duration

	// AuthPenalty keeps Dovecot's per-IP auth penalty: after failures,
	// every next attempt from the same IP, right password or not, waits
	// 4, 8, then 15 seconds (Dovecot 2.3.19, measured) until one
	// succeeds. Everything here connects from 127.0.0.1, so by default
	// it is off (Dovecot's anvil-auth-penalty listener is not created).
	AuthPenalty bool

	// AuthFailureDelay is Dovecot's auth_failure_delay: how long a failed
	// login waits before Dovecot answers it. Whole seconds. If zero, 0:
	// failures are answered at once (within the auth process's 500ms
	// flush timer). Dovecot's own default is 2 seconds; tests that
	// measure what a stock Dovecot does set that.
	AuthFailureDelay time.Duration

	// MasterUsers maps master user names to passwords: a master passdb
	// (passwd-file, master = yes, pass = yes) through which each of them
	// may log in as any user of Users, never as itself. Dovecot takes the
	// two forms of a master login (Dovecot 2.3, "Master users/passwords"):
	// SASL PLAIN with authzid = the user and authcid = the master, and a
	// user name "user*master" (MasterSeparator) in LOGIN or PLAIN. pass =
	// yes makes Dovecot look the user up in the normal passdb once the
	// master's password matched, so a user that does not exist (or is in
	// DeniedUsers) is refused instead of logged in to an empty mailbox.
	// Names follow the rules of Users and must not also be users. If nil,
	// Dovecot has no master passdb and refuses every master login.
	MasterUsers map[string]string

	// MasterSeparator is Dovecot's auth_master_user_separator. If empty,
	// "*" (the UW-IMAP convention Dovecot's documentation suggests). Only
	// used with MasterUsers.
	MasterSeparator string

	// DeniedUsers are users of Users whom a deny passdb (passwd-file,
	// deny = yes) refuses: their own password no longer logs them in,
	// nor does a master user. If empty, no one is denied.
	DeniedUsers []string

	// ReuseProcesses lets one imap process serve session after session
	// (service imap: service_count = 0, with spare processes forked in
	// advance) instead of Dovecot's default of a new process per login.
	// Every user here maps to the same mail uid, so this is safe, and it
	// makes a login cost what Dovecot's protocol work costs rather than a
	// fork and exec: load tests use it so the proxies in front, not
	// Dovecot's process creation, bound the logins per second.
	ReuseProcesses bool
}

// DefaultUsers returns the users a Dovecot has when DovecotOptions.Users
// is nil: user1 and user2, each with a password that has a capital
// letter, a digit and punctuation.
func DefaultUsers() map[string]string {
	return map[string]string{"user1": "pass1-Secret!", "user2": "pass2-Secret!"}
}

// Dovecot is a running Dovecot started by StartDovecot or NewDovecot.
type Dovecot struct {
	// Addr is the plaintext IMAP listener, "127.0.0.1:PORT". It offers
	// STARTTLS, and plaintext LOGIN is allowed (disable_plaintext_auth =
	// no) so the proxy's 'none' upstream mode works.
	Addr string
	// ImplicitAddr is the implicit TLS (imaps) listener, "127.0.0.1:PORT".
	ImplicitAddr string
	// HAProxyAddr is the plaintext listener behind a proxy that sends a
	// PROXY header ("127.0.0.1:PORT"), with STARTTLS and plaintext LOGIN
	// like Addr; "" without DovecotOptions.HAProxyTrustedNetworks.
	HAProxyAddr string
	// CAFile is the PEM file of the self-signed certificate Dovecot
	// serves (ECDSA P-256, SAN localhost and 127.0.0.1), for use as a CA
	// file. CertPEM is its content.
	CAFile  string
	CertPEM []byte
	// Dir holds everything: dovecot.conf, users, mail/, run/, the log.
	Dir string
	// LogFile is Dovecot's log (log_path), written with auth_verbose =
	// yes and auth_verbose_passwords = no. See AuthAttempts.
	LogFile string
	// Users is the effective user -> password map.
	Users map[string]string
	// MasterUsers is the effective master user -> password map (nil
	// without a master passdb), and MasterSeparator the effective
	// auth_master_user_separator ("" without MasterUsers).
	MasterUsers     map[string]string
	MasterSeparator string
	// PID is the process id of the Dovecot master.
	PID int

	direct     string // Dovecot's own plaintext listener (Addr, unless LoginOnly)
	stderrFile string
	cmd        *exec.Cmd
	exited     chan struct{} // closed when the master process has exited
	front      *loginOnlyFront

	closeOnce sync.Once
	closeErr  error
}

// Limits of the generated configuration. Tests may open more than a
// thousand sessions at once; each logged-in session is one imap process.
// The limits below are those of the default MaxSessions; the
// configuration scales them with it.
const (
	maxSessions   = 5000  // service imap process_limit
	loginClients  = 5000  // service imap-login client_limit, per process
	loginProcs    = 4     // service imap-login process_limit
	reuseSpares   = 64    // service imap process_min_avail with ReuseProcesses
	clientLimit   = 10000 // default_client_limit: log, anvil, auth, ...
	userIPConns   = 10000 // mail_max_userip_connections
	otherMsgSize  = 1024  // OtherUsersMessages' size
	startTimeout  = 10 * time.Second
	stopTimeout   = 10 * time.Second
	bindAttempts  = 3
	logTailOnFail = 50
)

// StartDovecot starts a Dovecot for the test and registers a t.Cleanup
// that stops it (SIGTERM to its PID) and removes its directory. It returns
// once both listeners accept connections and send a greeting, or fails the
// test with the end of Dovecot's log after 10 seconds.
//
// Starting takes about 0.1s; stopping about 1s (Dovecot's master waits a
// second for its children), so tests of a package may share one Dovecot.
// A failed login is answered within about 0.5s (auth_failure_delay = 0
// leaves only the auth process's 500ms flush timer).
//
// Without dovecot installed the test is skipped, or fails when CI=true.
func StartDovecot(t testing.TB, o DovecotOptions) *Dovecot {
	t.Helper()
	d, err := NewDovecot(o)
	if errors.Is(err, ErrNoDovecot) {
		missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxytest: last %d lines of %s:\n%s", logTailOnFail, d.LogFile, d.LogTail(logTailOnFail))
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// ErrNoDovecot is the error of NewDovecot when Dovecot 2.3 is not
// installed: StartDovecot skips the test then (or fails it on CI).
var ErrNoDovecot = errors.New("proxytest: Dovecot 2.3 is not installed")

// NewDovecot starts a Dovecot, like StartDovecot, for programs that are
// not tests; Close stops it and removes its directory. The error wraps
// ErrNoDovecot when Dovecot 2.3 is not installed. Dovecot also gets
// SIGTERM from the kernel if this process dies without calling Close.
func NewDovecot(o DovecotOptions) (*Dovecot, error) {
	bin, err := dovecotBinary()
	if err != nil {
		return nil, err
	}
	if o.Users == nil {
		o.Users = DefaultUsers()
	}
	if len(o.Users) == 0 {
		return nil, errors.New("proxytest: DovecotOptions.Users is empty: give at least one user, or nil for the defaults")
	}
	for u := range o.Users {
		if !validUsername(u) {
			return nil, fmt.Errorf("proxytest: user name %q: use only letters, digits and .-_@ (Dovecot's auth_username_chars)", u)
		}
	}
	if err := checkMasterOptions(&o); err != nil {
		return nil, err
	}
	if o.MessageSize == 0 {
		o.MessageSize = 2048
	}
	if o.AuthMechanisms == "" {
		o.AuthMechanisms = "plain login"
	}
	if o.MaxSessions < 0 {
		return nil, fmt.Errorf("proxytest: DovecotOptions.MaxSessions %d is negative", o.MaxSessions)
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = maxSessions
	}
	ids, err := lookupAccounts()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir()
	if err != nil {
		return nil, err
	}
	d := &Dovecot{
		Dir:        dir,
		LogFile:    filepath.Join(dir, "dovecot.log"),
		CAFile:     filepath.Join(dir, "cert.pem"),
		stderrFile: filepath.Join(dir, "stderr.log"),
		Users:      make(map[string]string, len(o.Users)),
	}
	for u, p := range o.Users {
		d.Users[u] = p
	}
	if o.MasterUsers != nil {
		d.MasterUsers = make(map[string]string, len(o.MasterUsers))
		for u, p := range o.MasterUsers {
			d.MasterUsers[u] = p
		}
		d.MasterSeparator = o.MasterSeparator
	}
	if err := d.start(bin, o, ids); err != nil {
		d.stop()
		if rerr := removeDir(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	return d, nil
}

// start writes the instance directory and starts Dovecot (and the
// LoginOnly relay), retrying when a port was taken.
func (d *Dovecot) start(bin string, o DovecotOptions, ids accounts) error {
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		return fmt.Errorf("proxytest: certificate: %w", err)
	}
	d.CertPEM = certPEM
	if err := writeFile(d.CAFile, certPEM, 0o644, -1, -1); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.Dir, "key.pem"), keyPEM, 0o600, -1, -1); err != nil {
		return err
	}
	// The auth process runs as the internal user and reads the users file.
	if err := writeFile(filepath.Join(d.Dir, "users"), passwdFile(d.Users), 0o600, ids.internalUID, ids.internalGID); err != nil {
		return err
	}
	if d.MasterUsers != nil {
		if err := writeFile(filepath.Join(d.Dir, "master-users"), passwdFile(d.MasterUsers), 0o600, ids.internalUID, ids.internalGID); err != nil {
			return err
		}
	}
	if len(o.DeniedUsers) > 0 {
		denied := make(map[string]string, len(o.DeniedUsers))
		for _, u := range o.DeniedUsers {
			denied[u] = "" // a deny passdb's password field is not read
		}
		if err := writeFile(filepath.Join(d.Dir, "denied-users"), passwdFile(denied), 0o600, ids.internalUID, ids.internalGID); err != nil {
			return err
		}
	}
	for _, sub := range []string{"run", "state"} {
		if err := os.Mkdir(filepath.Join(d.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("proxytest: %w", err)
		}
	}
	mail := mailboxes{
		root: filepath.Join(d.Dir, "mail"), users: d.Users,
		messages: o.Messages, size: o.MessageSize, others: o.OtherUsersMessages, othersSize: otherMsgSize,
		uid: ids.mailUID, gid: ids.mailGID,
	}
	if err := mail.write(); err != nil {
		return fmt.Errorf("proxytest: writing mail: %w", err)
	}

	for attempt := 1; ; attempt++ {
		plain, err := freePort()
		if err != nil {
			return err
		}
		implicit, err := freePort()
		if err != nil {
			return err
		}
		haproxy := ""
		if o.HAProxyTrustedNetworks != "" {
			if haproxy, err = freePort(); err != nil {
				return err
			}
		}
		conf := config(d.Dir, plain, implicit, haproxy, o, ids)
		if err := writeFile(filepath.Join(d.Dir, "dovecot.conf"), []byte(conf), 0o644, -1, -1); err != nil {
			return err
		}
		err = d.run(bin)
		if err == nil {
			err = d.waitReady(plain, implicit, haproxy)
		}
		if err == nil {
			d.Addr, d.ImplicitAddr, d.HAProxyAddr, d.direct = plain, implicit, haproxy, plain
			break
		}
		d.stop()
		tail := d.startupOutput()
		if attempt < bindAttempts && strings.Contains(tail, "Address already in use") {
			// Another process took a port between freePort and bind.
			os.Remove(d.LogFile)
			continue
		}
		return fmt.Errorf("proxytest: dovecot did not start: %v\n%s", err, tail)
	}

	if o.LoginOnly {
		front, err := startLoginOnlyFront(d.Addr, d.ImplicitAddr, certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("proxytest: LoginOnly relay: %w", err)
		}
		d.front = front
		d.Addr, d.ImplicitAddr = front.plainAddr(), front.implicitAddr()
	}
	return nil
}

// Close stops Dovecot (SIGTERM to its master, which stops its children;
// SIGKILL after 10 seconds) and the LoginOnly relay, and removes Dir.
// Later calls return the first call's result.
func (d *Dovecot) Close() error {
	d.closeOnce.Do(func() {
		if d.front != nil {
			d.front.close()
		}
		d.stop()
		d.closeErr = removeDir(d.Dir)
	})
	return d.closeErr
}

// checkMasterOptions checks MasterUsers, MasterSeparator and DeniedUsers
// and fills in the separator's default.
func checkMasterOptions(o *DovecotOptions) error {
	for m := range o.MasterUsers {
		if !validUsername(m) {
			return fmt.Errorf("proxytest: master user name %q: use only letters, digits and .-_@ (Dovecot's auth_username_chars)", m)
		}
		if _, ok := o.Users[m]; ok {
			return fmt.Errorf("proxytest: %q is both a user and a master user: a master passdb's users cannot log in as themselves", m)
		}
	}
	if o.MasterUsers == nil {
		if o.MasterSeparator != "" {
			return errors.New("proxytest: DovecotOptions.MasterSeparator is set without MasterUsers")
		}
	} else if o.MasterSeparator == "" {
		o.MasterSeparator = "*"
	}
	if strings.ContainsAny(o.MasterSeparator, " \t\r\n\"#") {
		return fmt.Errorf("proxytest: DovecotOptions.MasterSeparator %q: no space, quote or '#' (dovecot.conf syntax)", o.MasterSeparator)
	}
	for _, u := range o.DeniedUsers {
		if _, ok := o.Users[u]; !ok {
			return fmt.Errorf("proxytest: DovecotOptions.DeniedUsers: %q is not one of Users", u)
		}
	}
	return nil
}

// NumberedUsers returns n users, user1 .. userN, all with password: the
// users of load tests that spread sessions over many accounts.
func NumberedUsers(n int, password string) map[string]string {
	users := make(map[string]string, n)
	for i := 1; i <= n; i++ {
		users["user"+strconv.Itoa(i)] = password
	}
	return users
}

// run starts the master in the foreground. A shell raises the soft file
// descriptor limit to the hard one first (Go restores the original soft
// limit for children; thousands of sessions need more) and then execs
// dovecot, so the PID is Dovecot's.
func (d *Dovecot) run(bin string) error {
	stderr, err := os.OpenFile(d.stderrFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" -F -c "$1"`,
		bin, filepath.Join(d.Dir, "dovecot.conf"))
	cmd.Dir = d.Dir
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.SysProcAttr = sysProcAttr()
	d.exited = make(chan struct{})
	started := make(chan error)
	go func() {
		defer close(d.exited)
		// Pdeathsig fires when the thread that started Dovecot ends,
		// so that thread stays locked here until Dovecot has exited.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
	}()
	if err := <-started; err != nil {
		return err
	}
	d.cmd, d.PID = cmd, cmd.Process.Pid
	return nil
}

// waitReady waits until every listener greets a client; haproxy ("" for
// none) after a PROXY v2 header.
func (d *Dovecot) waitReady(plain, implicit, haproxy string) error {
	deadline := time.Now().Add(startTimeout)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(d.CertPEM)
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			return fmt.Errorf("dovecot exited: %v", d.cmd.ProcessState)
		default:
		}
		last = greets(plain, nil)
		if last == nil {
			last = greets(implicit, tlsConf)
		}
		if last == nil && haproxy != "" {
			last = greetsBehindProxy(haproxy)
		}
		if last == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("no greeting on %s and %s within %v: %v", plain, implicit, startTimeout, last)
}

// greets connects to addr (with TLS if conf is set) and reads "* OK".
func greets(addr string, conf *tls.Config) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if conf != nil {
		tc := tls.Client(c, conf)
		if err := tc.Handshake(); err != nil {
			return err
		}
		c = tc
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if !bytes.HasPrefix(buf[:n], []byte("* OK")) {
		return fmt.Errorf("greeting from %s: %q %v", addr, buf[:n], err)
	}
	return nil
}

// stop sends SIGTERM to the master, which stops all its processes, and
// waits; after stopTimeout it kills it.
func (d *Dovecot) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// startupOutput is what Dovecot said while failing to start.
func (d *Dovecot) startupOutput() string {
	out, _ := os.ReadFile(d.stderrFile)
	s := d.LogTail(logTailOnFail)
	if len(bytes.TrimSpace(out)) > 0 {
		s = "stderr:\n" + string(out) + "\nlog:\n" + s
	}
	return s
}

// diagnostics is what a failure message shows of a running Dovecot: its
// processes and the end of its log.
func (d *Dovecot) diagnostics() string {
	return fmt.Sprintf("processes (pid ppid state wchan command):\n%s\nlast %d lines of %s:\n%s",
		processTree(d.PID), logTailOnFail, d.LogFile, d.LogTail(logTailOnFail))
}

// LogTail returns the last n lines of LogFile.
func (d *Dovecot) LogTail(n int) string {
	b, err := os.ReadFile(d.LogFile)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
