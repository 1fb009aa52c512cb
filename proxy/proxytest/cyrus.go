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

// CyrusOptions configures StartCyrus. The zero value is a Cyrus with the
// default users, empty INBOXes and no proxy servers.
type CyrusOptions struct {
	// Users maps user names to passwords (in Cyrus SASL's sasldb). If
	// nil, DefaultUsers() is used. Letters, digits and ".-_" only.
	Users map[string]string
	// Messages is the number of messages (MakeMessage, MessageSize bytes,
	// flags as seedMessages sets them) in every user's INBOX.
	Messages int
	// MessageSize is the size of each message. If zero, 2048.
	MessageSize int
	// ProxyServers maps the users of Cyrus's proxyservers to passwords:
	// each may log in as any user with SASL PLAIN, authzid = the user and
	// authcid = itself (imapgate's master form sasl-authzid). If nil,
	// there are none.
	ProxyServers map[string]string
}

// Cyrus is a running Cyrus IMAP 3.6 started by StartCyrus.
type Cyrus struct {
	// Addr is the plaintext listener (STARTTLS offered, plaintext LOGIN
	// allowed: allowplaintext yes); ImplicitAddr the imaps one.
	Addr, ImplicitAddr string
	// CAFile is the PEM file of its self-signed certificate (localhost,
	// 127.0.0.1); CertPEM is its content.
	CAFile  string
	CertPEM []byte
	// Users and ProxyServers are the effective accounts.
	Users, ProxyServers map[string]string
	// Dir holds imapd.conf, cyrus.conf, the sasldb and the spool.
	Dir string

	d         *daemon
	closeOnce sync.Once
	closeErr  error
}

// ErrNoCyrus is NewCyrus's error when Cyrus 3.6 is not installed.
var ErrNoCyrus = errors.New("proxytest: Cyrus IMAP 3.6 is not installed (cyrus-common, cyrus-imapd unpacked by .ci/run, sasl2-bin)")

// cyrusAdmin is the admin user the harness creates mailboxes with.
const cyrusAdmin = "imapadmin"

// StartCyrus starts a Cyrus for the test and stops it in t.Cleanup.
//
// Cyrus runs as its master process ("master -C imapd.conf -M cyrus.conf")
// from a configuration generated in a temporary directory, listening on
// free loopback ports; neither the system's Cyrus service nor /etc is
// used. Run as root, the master drops to the system's "cyrus" user
// (cyrus-common creates it), which then owns the directory; run as
// another user, it stays that user (cyrus_user). Without Cyrus the test
// is skipped, or fails when CI=true.
func StartCyrus(t testing.TB, o CyrusOptions) *Cyrus {
	t.Helper()
	c, err := NewCyrus(o)
	if errors.Is(err, ErrNoCyrus) {
		missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxytest: Cyrus output:\n%s", tail(c.d.output(), logTailOnFail))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// cyrusBinaries are master, ctl_cyrusdb, imapd and saslpasswd2.
type cyrusBinaries struct{ master, ctl, imapd, saslpasswd string }

func findCyrus() (cyrusBinaries, error) {
	var b cyrusBinaries
	var ok [4]bool
	b.master, ok[0] = findBinary("/usr/lib/cyrus/bin/master")
	b.ctl, ok[1] = findBinary("/usr/lib/cyrus/bin/ctl_cyrusdb")
	b.imapd, ok[2] = findBinary("/usr/lib/cyrus/bin/imapd", serversDir+"/cyrus-imapd/usr/lib/cyrus/bin/imapd")
	b.saslpasswd, ok[3] = findBinary("/usr/sbin/saslpasswd2")
	if !ok[0] || !ok[1] || !ok[2] || !ok[3] {
		return b, ErrNoCyrus
	}
	return b, nil
}

// NewCyrus is StartCyrus for programs that are not tests.
func NewCyrus(o CyrusOptions) (*Cyrus, error) {
	bin, err := findCyrus()
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
	c := &Cyrus{Dir: dir, CAFile: filepath.Join(dir, "cert.pem"), Users: map[string]string{}, ProxyServers: map[string]string{}}
	for u, p := range o.Users {
		c.Users[u] = p
	}
	for u, p := range o.ProxyServers {
		c.ProxyServers[u] = p
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

func (c *Cyrus) start(bin cyrusBinaries, o CyrusOptions) error {
	for _, sub := range []string{"conf", "spool", "socket", "run"} {
		if err := os.Mkdir(filepath.Join(c.Dir, sub), 0o750); err != nil {
			return err
		}
	}
	var err error
	if c.CertPEM, err = writeCertFiles(c.Dir); err != nil {
		return err
	}
	accounts := map[string]string{cyrusAdmin: "admin-Secret1"}
	for u, p := range c.Users {
		accounts[u] = p
	}
	for u, p := range c.ProxyServers {
		accounts[u] = p
	}
	const realm = "imapgate-test" // servername: sasldb entries are user@realm
	for _, u := range sortedUsers(accounts) {
		cmd := exec.Command(bin.saslpasswd, "-p", "-c", "-f", filepath.Join(c.Dir, "sasldb2"), "-u", realm, u)
		cmd.Stdin = strings.NewReader(accounts[u])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("proxytest: saslpasswd2 %s: %v: %s", u, err, out)
		}
	}
	runAs, uid, gid, err := cyrusUser()
	if err != nil {
		return err
	}
	if uid >= 0 {
		if err := chownTree(c.Dir, uid, gid); err != nil {
			return err
		}
	}
	ports, err := freePortsN(2)
	if err != nil {
		return err
	}
	c.Addr, c.ImplicitAddr = ports[0], ports[1]
	// An empty "proxyservers:" line stops Cyrus (exit 78, EX_CONFIG).
	proxy := ""
	if len(c.ProxyServers) > 0 {
		proxy = "proxyservers: " + strings.Join(sortedUsers(c.ProxyServers), " ") + "\n"
	}
	conf := fmt.Sprintf(`configdirectory: %[1]s/conf
partition-default: %[1]s/spool
servername: %[2]s
cyrus_user: %[3]s
admins: %[4]s
%[5]ssasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: %[1]s/sasldb2
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
unixhierarchysep: yes
tls_server_cert: %[1]s/cert.pem
tls_server_key: %[1]s/key.pem
lmtpsocket: %[1]s/socket/lmtp
idlesocket: %[1]s/socket/idle
notifysocket: %[1]s/socket/notify
syslog_prefix: cyrus-proxytest
`, c.Dir, realm, runAs, cyrusAdmin, proxy)
	imapdConf := filepath.Join(c.Dir, "imapd.conf")
	services := fmt.Sprintf(`START {
  recover cmd="%[1]s -C %[2]s -r"
}
SERVICES {
  imap cmd="%[3]s -C %[2]s" listen="%[4]s" prefork=0
  imaps cmd="%[3]s -s -C %[2]s" listen="%[5]s" prefork=0
}
EVENTS {
}
DAEMON {
}
`, bin.ctl, imapdConf, bin.imapd, c.Addr, c.ImplicitAddr)
	for name, data := range map[string]string{"imapd.conf": conf, "cyrus.conf": services} {
		if err := writeFile(filepath.Join(c.Dir, name), []byte(data), 0o644, uid, gid); err != nil {
			return err
		}
	}
	c.d, err = startDaemon(c.Dir, filepath.Join(c.Dir, "master.out"), nil, bin.master,
		"-C", imapdConf, "-M", filepath.Join(c.Dir, "cyrus.conf"), "-p", filepath.Join(c.Dir, "run", "master.pid"))
	if err != nil {
		return err
	}
	if err := c.d.waitGreeting(c.CertPEM, []string{c.Addr}, []string{c.ImplicitAddr}); err != nil {
		return fmt.Errorf("proxytest: cyrus did not start: %w", err)
	}
	return c.createMailboxes(o)
}

// createMailboxes creates user/NAME for every user as the admin, then
// puts the messages in as the user.
func (c *Cyrus) createMailboxes(o CyrusOptions) error {
	var cmds []string
	for i, u := range sortedUsers(c.Users) {
		cmds = append(cmds, "c"+strconv.Itoa(i)+" CREATE "+quoteArg("user/"+u))
	}
	if err := adminScript(c.Addr, cyrusAdmin, "admin-Secret1", cmds); err != nil {
		return fmt.Errorf("proxytest: creating Cyrus mailboxes: %w", err)
	}
	if o.Messages == 0 {
		return nil
	}
	for _, u := range sortedUsers(c.Users) {
		if err := seedMessages(c.Addr, u, c.Users[u], o.Messages, o.MessageSize); err != nil {
			return fmt.Errorf("proxytest: mail for %s: %w", u, err)
		}
	}
	return nil
}

// Close stops Cyrus and removes Dir.
func (c *Cyrus) Close() error {
	c.closeOnce.Do(func() {
		c.d.stop()
		c.closeErr = removeDir(c.Dir)
	})
	return c.closeErr
}

// cyrusUser is the user Cyrus runs as: as root, the system's "cyrus"
// (whose uid and gid then own the directory); else the current user
// (uid -1: nothing to chown).
func cyrusUser() (name string, uid, gid int, err error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return "", 0, 0, err
		}
		return u.Username, -1, -1, nil
	}
	u, err := user.Lookup("cyrus")
	if err != nil {
		return "", 0, 0, fmt.Errorf("%w: no cyrus user: %v", ErrNoCyrus, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return u.Username, uid, gid, nil
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// freePortsN is FreePorts without a testing.TB.
func freePortsN(n int) ([]string, error) {
	var addrs []string
	for len(addrs) < n {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		if !strings.Contains(strings.Join(addrs, " "), a) {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}
