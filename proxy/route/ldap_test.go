package route

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

const (
	slapdBase   = "dc=corp,dc=example"
	slapdRoot   = "cn=admin,dc=corp,dc=example"
	slapdRootPW = "Root-Secret-1"
)

// startSlapd starts Debian's slapd for the test with a generated
// slapd.conf (mdb database in a temporary directory, misc.schema for
// mailHost) on a loopback port, never the system service, and returns
// its URL. Entries are added with go-ldap as the root DN.
func startSlapd(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/slapd"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("slapd"); err == nil {
			bin = p
		} else if os.Getenv("CI") == "true" {
			t.Fatal("slapd not installed: run .ci/run (it installs slapd)")
		} else {
			t.Skip("slapd not installed: run .ci/run (it installs slapd)")
		}
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	os.Mkdir(db, 0o700)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/misc.schema
pidfile %s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "%s"
rootdn "%s"
rootpw %s
directory %s
maxsize 10485760
`, dir, slapdBase, slapdRoot, slapdRootPW, db)
	confPath := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := proxytest.FreePort(t)
	url := "ldap://" + addr
	cmd := exec.Command(bin, "-d", "0", "-f", confPath, "-h", url+"/")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn *ldap.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := ldap.DialURL(url)
		if err == nil {
			if err = c.Bind(slapdRoot, slapdRootPW); err == nil {
				conn = c
				break
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	add := func(dn string, attrs map[string][]string) {
		req := ldap.NewAddRequest(dn, nil)
		for k, v := range attrs {
			req.Attribute(k, v)
		}
		if err := conn.Add(req); err != nil {
			t.Fatalf("add %s: %v", dn, err)
		}
	}
	add(slapdBase, map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"corp"}, "o": {"Corp"}})
	add("ou=people,"+slapdBase, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}})
	add("cn=svc,"+slapdBase, map[string][]string{"objectClass": {"person", "simpleSecurityObject"}, "cn": {"svc"}, "sn": {"svc"}, "userPassword": {"Svc-Pass-1"}})
	person := func(uid, mailHost string) {
		attrs := map[string][]string{"objectClass": {"inetOrgPerson", "inetLocalMailRecipient"}, "uid": {uid}, "cn": {uid}, "sn": {uid}, "mail": {uid + "@corp.example"}}
		if mailHost != "" {
			attrs["mailHost"] = []string{mailHost}
		}
		add("uid="+uid+",ou=people,"+slapdBase, attrs)
	}
	person("alice", "mail1.corp.example")
	person("bob", "/o=Corp/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn=EXCH01")
	person("carol", "")
	person("twin1", "a")
	add("uid=twin2,ou=people,"+slapdBase, map[string][]string{"objectClass": {"inetOrgPerson", "inetLocalMailRecipient"}, "uid": {"twin2"}, "cn": {"twin"}, "sn": {"twin"}, "mail": {"twin@corp.example"}, "mailHost": {"b"}})
	add("uid=twin3,ou=people,"+slapdBase, map[string][]string{"objectClass": {"inetOrgPerson", "inetLocalMailRecipient"}, "uid": {"twin3"}, "cn": {"twin"}, "sn": {"twin"}, "mail": {"twin@corp.example"}, "mailHost": {"c"}})
	return url
}

// TestLDAPLookupAgainstARealSlapd: the server of a mailbox comes from the
// attribute of the one entry the filter finds, with the user name
// escaped; an Exchange legacy DN is answered by its last cn= or through
// Servers; no entry or no attribute is ErrNotFound; two entries, a wrong
// bind password and a directory that is gone are failures.
func TestLDAPLookupAgainstARealSlapd(t *testing.T) {
	url := startSlapd(t)
	l := &LDAP{URL: url, BindDN: "cn=svc," + slapdBase, BindPassword: "Svc-Pass-1", BaseDN: slapdBase,
		Filter: "(&(objectClass=inetOrgPerson)(mail={user}))", Attribute: "mailhost", Timeout: 3 * time.Second}
	ctx := context.Background()
	tests := []struct {
		user, want string
		err        error
	}{
		{"alice@corp.example", "mail1.corp.example", nil},
		{"bob@corp.example", "EXCH01", nil},
		{"carol@corp.example", "", ErrNotFound},
		{"nobody@corp.example", "", ErrNotFound},
		{"*", "", ErrNotFound}, // escaped: no wildcard search
		{"twin@corp.example", "", errors.New("entries match")},
	}
	for _, tt := range tests {
		a, err := l.Lookup(ctx, Query{User: tt.user})
		switch {
		case tt.err == nil && (err != nil || a.Server != tt.want || a.Source != "ldap"):
			t.Errorf("%s: %+v, %v; want %s", tt.user, a, err, tt.want)
		case tt.err == ErrNotFound && !errors.Is(err, ErrNotFound):
			t.Errorf("%s: %+v, %v; want ErrNotFound", tt.user, a, err)
		case tt.err != nil && tt.err != ErrNotFound && (err == nil || !strings.Contains(err.Error(), tt.err.Error())):
			t.Errorf("%s: %+v, %v; want %v", tt.user, a, err, tt.err)
		}
	}
	l.Servers = map[string]string{"exch01": "exchange"}
	if a, err := l.Lookup(ctx, Query{User: "bob@corp.example"}); err != nil || a.Server != "exchange" {
		t.Errorf("bob through Servers: %+v, %v", a, err)
	}
	bad := *l
	bad.BindPassword = "wrong"
	if _, err := bad.Lookup(ctx, Query{User: "alice@corp.example"}); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("wrong bind password: %v; want a failure", err)
	}
	gone := *l
	gone.URL = "ldap://" + proxytest.FreePort(t)
	if _, err := gone.Lookup(ctx, Query{User: "alice@corp.example"}); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("directory down: %v; want a failure", err)
	}
}
