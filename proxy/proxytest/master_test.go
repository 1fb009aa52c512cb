package proxytest

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

const (
	testMaster       = "imapgate"
	testMasterSecret = "master-Secret!"
)

// A master user logs in as user1 through SASL PLAIN's authorization
// identity and as user2 through "user2*imapgate"; Dovecot's log names the
// master and the user of each, and never the master's secret.
func TestMasterUserLogsInAsAnotherUser(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{MasterUsers: map[string]string{testMaster: testMasterSecret}})
	if d.MasterSeparator != "*" {
		t.Fatalf("MasterSeparator = %q, want the default *", d.MasterSeparator)
	}

	c := dialPlain(t, d)
	if err := c.Authenticate(sasl.NewPlainClient("user1", testMaster, testMasterSecret)); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN authzid=user1 authcid=%s: %v", testMaster, err)
	}
	c.Logout().Wait()
	c = dialPlain(t, d)
	if err := c.Login("user2*"+testMaster, testMasterSecret).Wait(); err != nil {
		t.Fatalf("LOGIN user2*%s: %v", testMaster, err)
	}
	c.Logout().Wait()
	c = dialPlain(t, d)
	if err := c.Login("user2*"+testMaster, "not-the-"+testMasterSecret).Wait(); err == nil {
		t.Fatal("a wrong master secret logged in")
	}
	c.Logout().Wait()

	got := d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 2 && c.Failure == 1 })
	wantMaster := map[MasterUse]int{{testMaster, "user1"}: 1, {testMaster, "user2"}: 1}
	if len(got.MasterLogins) != 2 || got.MasterLogins[MasterUse{testMaster, "user1"}] != 1 || got.MasterLogins[MasterUse{testMaster, "user2"}] != 1 {
		t.Errorf("MasterLogins = %v, want %v", got.MasterLogins, wantMaster)
	}
	if got.ByUser["user1"] != 1 || got.ByUser["user2"] != 1 || got.FailureByUser[testMaster] != 1 || got.ByIP["127.0.0.1"] != 3 {
		t.Errorf("AuthAttempts() = %+v, want user1 and user2 logged in once each, one failure of the master from 127.0.0.1", got)
	}
	d.WaitLog(t, "Master user logging in as user1")
	d.WaitLog(t, "Master user logging in as user2")
	for _, secret := range []string{testMasterSecret, base64.StdEncoding.EncodeToString([]byte("user1\x00" + testMaster + "\x00" + testMasterSecret))} {
		if d.LogContains(secret) {
			t.Errorf("Dovecot's log holds the master secret (%q)", secret)
		}
	}
}

// A denied user logs in neither with its own password nor through a
// master user, with the master separator of the test's choice; Dovecot
// answers the master AUTHORIZATIONFAILED, as it does for a user that does
// not exist.
func TestDeniedUserRefusedEvenToTheMaster(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{
		MasterUsers:     map[string]string{testMaster: testMasterSecret},
		MasterSeparator: "+",
		DeniedUsers:     []string{"user2"},
	})
	for _, tt := range []struct{ user, password string }{
		{"user2", d.Users["user2"]},
		{"user2+" + testMaster, testMasterSecret},
		{"nosuch+" + testMaster, testMasterSecret},
	} {
		c := dialPlain(t, d)
		err := c.Login(tt.user, tt.password).Wait()
		var imapErr *imap.Error
		switch {
		case err == nil:
			t.Errorf("LOGIN %s succeeded, want refused", tt.user)
		case strings.Contains(tt.user, "+") && !(errors.As(err, &imapErr) && imapErr.Code == "AUTHORIZATIONFAILED"):
			t.Errorf("LOGIN %s: %v, want NO [AUTHORIZATIONFAILED]", tt.user, err)
		}
		c.Close()
	}
	c := dialPlain(t, d)
	if err := c.Login("user1+"+testMaster, testMasterSecret).Wait(); err != nil {
		t.Errorf("LOGIN user1+%s (not denied): %v", testMaster, err)
	}
	c.Logout().Wait()
	d.WaitLog(t, "User found from deny passdb")
	d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.MasterLogins[MasterUse{testMaster, "user1"}] == 1 })
}

func TestMasterOptionsChecked(t *testing.T) {
	if _, err := dovecotBinary(); errors.Is(err, ErrNoDovecot) {
		missing(t, err.Error())
	}
	for _, tt := range []struct {
		name string
		o    DovecotOptions
		want string
	}{
		{"master is a user", DovecotOptions{MasterUsers: map[string]string{"user1": "x"}}, "both a user and a master user"},
		{"master name", DovecotOptions{MasterUsers: map[string]string{"a b": "x"}}, "master user name"},
		{"separator alone", DovecotOptions{MasterSeparator: "*"}, "without MasterUsers"},
		{"separator syntax", DovecotOptions{MasterUsers: map[string]string{"m": "x"}, MasterSeparator: "# "}, "dovecot.conf syntax"},
		{"denied stranger", DovecotOptions{DeniedUsers: []string{"nosuch"}}, "not one of Users"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDovecot(tt.o)
			if err == nil {
				d.Close()
				t.Fatalf("NewDovecot started, want an error with %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func dialPlain(t *testing.T, d *Dovecot) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
