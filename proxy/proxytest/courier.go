package proxytest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// CourierOptions configures StartCourier. The zero value is a Courier
// with the default users and empty INBOXes.
type CourierOptions struct {
	// Users maps user names to passwords (a userdb). If nil,
	// DefaultUsers() is used. Letters, digits and ".-_" only.
	Users map[string]string
	// Messages is the number of messages (MakeMessage, MessageSize bytes,
	// flags as seedMessages sets them) in every user's INBOX.
	Messages int
	// MessageSize is the size of each message. If zero, 2048.
	MessageSize int
}

// Courier is a running Courier IMAP 5 started by StartCourier.
type Courier struct {
	// Addr is the plaintext listener (STARTTLS offered; LOGIN allowed
	// before it, IMAP_TLS_REQUIRED=0); ImplicitAddr the couriertls one.
	Addr, ImplicitAddr string
	// CAFile is the PEM file of its self-signed certificate (localhost,
	// 127.0.0.1); CertPEM is its content.
	CAFile  string
	CertPEM []byte
	// Users is the effective user -> password map.
	Users map[string]string
	// Dir holds the configuration, the userdb and the Maildirs.
	Dir string

	d         *daemon
	closeOnce sync.Once
	closeErr  error
}

// ErrNoCourier is NewCourier's error when Courier IMAP cannot run here:
// not installed, or not root (see StartCourier).
var ErrNoCourier = errors.New("proxytest: Courier IMAP 5 cannot run (courier-base, courier-authlib-userdb, courier-imap unpacked by .ci/run; root for a mount namespace)")

// StartCourier starts a Courier for the test and stops it in t.Cleanup.
//
// Courier's login process (imaplogin) asks authdaemond over a socket
// whose path, /run/courier/authdaemon/socket, is compiled in, and
// authdaemond and makeuserdb read /etc/courier/authdaemonrc and
// /etc/courier/userdb, also compiled in: no option moves them. So the
// harness runs authdaemond and two couriertcpd listeners (STARTTLS, and
// implicit TLS through couriertls) inside a private mount namespace
// (unshare --mount), where a temporary directory is bind-mounted over
// /etc/courier and /run/courier/authdaemon: nothing outside the
// namespace sees them, and neither the system's Courier nor its files
// are touched. That needs root (CAP_SYS_ADMIN); without it, or without
// Courier, the test is skipped, or fails when CI=true. Mail belongs to
// the system's "courier" user.
func StartCourier(t testing.TB, o CourierOptions) *Courier {
	t.Helper()
	c, err := NewCourier(o)
	if errors.Is(err, ErrNoCourier) {
		missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxytest: Courier output:\n%s", tail(c.d.output(), logTailOnFail))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// courierBinaries are the programs the namespace script runs.
type courierBinaries struct {
	authdaemond, makeuserdb, tcpd, tls, imaplogin, imapd, unshare, mount string
}

func findCourier() (courierBinaries, error) {
	var b courierBinaries
	found := true
	for _, f := range []struct {
		p     *string
		paths []string
	}{
		{&b.authdaemond, []string{"/usr/lib/courier/courier-authlib/authdaemond"}},
		{&b.makeuserdb, []string{"/usr/sbin/makeuserdb"}},
		{&b.tcpd, []string{"/usr/sbin/couriertcpd"}},
		{&b.tls, []string{"/usr/bin/couriertls"}},
		{&b.imaplogin, []string{"/usr/lib/courier/courier/imaplogin", serversDir + "/courier-imap/usr/lib/courier/courier/imaplogin"}},
		{&b.imapd, []string{"/usr/bin/imapd", serversDir + "/courier-imap/usr/bin/imapd"}},
		{&b.unshare, []string{"/usr/bin/unshare"}},
		{&b.mount, []string{"/usr/bin/mount", "/bin/mount"}},
	} {
		var ok bool
		if *f.p, ok = findBinary(f.paths...); !ok {
			found = false
		}
	}
	for _, dir := range []string{"/etc/courier", "/run/courier/authdaemon"} {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			found = false
		}
	}
	if !found || os.Geteuid() != 0 {
		return b, ErrNoCourier
	}
	return b, nil
}

// NewCourier is StartCourier for programs that are not tests.
func NewCourier(o CourierOptions) (*Courier, error) {
	bin, err := findCourier()
	if err != nil {
		return nil, err
	}
	if o.Users == nil {
		o.Users = DefaultUsers()
	}
	if o.MessageSize == 0 {
		o.MessageSize = 2048
	}
	dir, err := makeDir()
	if err != nil {
		return nil, err
	}
	c := &Courier{Dir: dir, CAFile: filepath.Join(dir, "cert.pem"), Users: map[string]string{}}
	for u, p := range o.Users {
		c.Users[u] = p
	}
	if err := c.start(bin, o); err != nil {
		if c.d != nil {
			err = fmt.Errorf("%w\n%s", err, tail(c.d.output(), logTailOnFail))
		}
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Courier) start(bin courierBinaries, o CourierOptions) error {
	u, err := user.Lookup("courier")
	if err != nil {
		return fmt.Errorf("%w: no courier user: %v", ErrNoCourier, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, sub := range []string{"etc", "authrun", "mail"} {
		if err := os.Mkdir(filepath.Join(c.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	if c.CertPEM, err = writeCertFiles(c.Dir); err != nil {
		return err
	}
	var userdb strings.Builder
	for _, name := range sortedUsers(c.Users) {
		cmd := exec.Command("openssl", "passwd", "-6", "-stdin")
		cmd.Stdin = strings.NewReader(c.Users[name])
		hash, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("proxytest: openssl passwd: %w", err)
		}
		home := filepath.Join(c.Dir, "mail", name)
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(home, "Maildir", sub), 0o700); err != nil {
				return err
			}
		}
		fmt.Fprintf(&userdb, "%s\tuid=%d|gid=%d|home=%s|mail=%s|systempw=%s\n",
			name, uid, gid, home, filepath.Join(home, "Maildir"), strings.TrimSpace(string(hash)))
	}
	if err := chownTree(filepath.Join(c.Dir, "mail"), uid, gid); err != nil {
		return err
	}
	// authdaemond's socket directory, and the certificate: as root's
	// 0600 file, couriertls started for STARTTLS could not use it (the
	// handshake ended in EOF), while the implicit listener's could.
	for _, name := range []string{"authrun", "combined.pem"} {
		if err := os.Chown(filepath.Join(c.Dir, name), uid, gid); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/userdb":       userdb.String(),
		"etc/authdaemonrc": "authmodulelist=\"authuserdb\"\ndaemons=2\nauthdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=\"\"\nLOGGEROPTS=\"\"\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	ports, err := freePortsN(2)
	if err != nil {
		return err
	}
	c.Addr, c.ImplicitAddr = ports[0], ports[1]
	_, plainPort, _ := strings.Cut(c.Addr, ":")
	_, implicitPort, _ := strings.Cut(c.ImplicitAddr, ":")
	script := filepath.Join(c.Dir, "run.sh")
	if err := os.WriteFile(script, []byte(courierScript(c.Dir, bin, plainPort, implicitPort)), 0o700); err != nil {
		return err
	}
	c.d, err = startDaemon(c.Dir, filepath.Join(c.Dir, "run.out"), nil, bin.unshare, "--mount", "--propagation", "private", "/bin/sh", script)
	if err != nil {
		return err
	}
	if err := c.d.waitGreeting(c.CertPEM, []string{c.Addr}, []string{c.ImplicitAddr}); err != nil {
		return fmt.Errorf("proxytest: courier did not start: %w", err)
	}
	if o.Messages > 0 {
		for _, name := range sortedUsers(c.Users) {
			if err := seedMessages(c.Addr, name, c.Users[name], o.Messages, o.MessageSize); err != nil {
				return fmt.Errorf("proxytest: mail for %s: %w", name, err)
			}
		}
	}
	return nil
}

// courierScript runs inside the mount namespace: the bind mounts, the
// userdb, authdaemond, and the two listeners with the environment
// Debian's /etc/courier/imapd and imapd-ssl would set. On SIGTERM it
// stops what it started and waits for it.
func courierScript(dir string, b courierBinaries, plainPort, implicitPort string) string {
	return fmt.Sprintf(`set -e
%[2]s --bind %[1]s/etc /etc/courier
%[2]s --bind %[1]s/authrun /run/courier/authdaemon
%[3]s
set -a
. %[1]s/etc/authdaemonrc
set +a
%[4]s &
auth=$!
trap 'kill $auth $plain $implicit 2>/dev/null; wait' TERM INT
n=0
while [ ! -S %[1]s/authrun/socket ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
export IMAP_CAPABILITY="IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
export IMAP_CAPABILITY_TLS="$IMAP_CAPABILITY AUTH=PLAIN"
export IMAP_KEYWORDS=1 IMAP_ACL=1 IMAP_IDLE_TIMEOUT=60 IMAP_MAILBOX_SANITY_CHECK=1 IMAP_UMASK=022 IMAP_USELOCKS=1
export IMAP_TRASHFOLDERNAME=Trash IMAP_EMPTYTRASH=Trash:7 MAILDIRPATH=Maildir AUTHMODULES=authdaemon
export TLS_CERTFILE=%[1]s/combined.pem TLS_VERIFYPEER=NONE COURIERTLS=%[5]s IMAP_TLS_REQUIRED=0
IMAP_STARTTLS=YES %[6]s -address=127.0.0.1 -nodnslookup -noidentlookup -stderr=%[1]s/imapd.err %[7]s %[8]s %[9]s Maildir &
plain=$!
IMAP_TLS=1 IMAP_STARTTLS=NO %[6]s -address=127.0.0.1 -nodnslookup -noidentlookup -stderr=%[1]s/imapd-ssl.err %[10]s %[5]s -server -tcpd %[8]s %[9]s Maildir &
implicit=$!
wait
`, dir, b.mount, b.makeuserdb, b.authdaemond, b.tls, b.tcpd, plainPort, b.imaplogin, b.imapd, implicitPort)
}

// Close stops Courier and removes Dir.
func (c *Courier) Close() error {
	c.closeOnce.Do(func() {
		c.d.stop()
		c.closeErr = removeDir(c.Dir)
	})
	return c.closeErr
}
