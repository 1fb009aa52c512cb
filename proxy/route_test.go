package proxy

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/proxy/route"
)

// TestRoutingByDomainAndMapFileBetweenTwoDovecots: "old" holds one message
// per INBOX and "new" two. A [[route]] sends example.org to new, a map
// file sends bob@example.net there too, everyone else stays on the
// default, old. Each user lands where the routes say, the audit event
// names the upstream and the lookup that chose it, and an edit of the map
// file moves bob back at the next check.
func TestRoutingByDomainAndMapFileBetweenTwoDovecots(t *testing.T) {
	users := map[string]string{"alice@example.org": "Alice-Pass-1", "bob@example.net": "Bob-Pass-1", "carol@example.net": "Carol-Pass-1"}
	oldDC := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: users, OtherUsersMessages: 1})
	newDC := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: users, OtherUsersMessages: 2})
	old := routedGroup("old", time.Hour, oldDC.Addr)
	nu := routedGroup("new", time.Hour, newDC.Addr)
	mapPath := filepath.Join(t.TempDir(), "routes.map")
	os.WriteFile(mapPath, []byte("bob@example.net new\n"), 0o644)
	mf := &route.MapFile{Path: mapPath, CheckEvery: time.Nanosecond}
	if err := mf.Reload(); err != nil {
		t.Fatal(err)
	}
	tp := startProxyTo(t, oldDC.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{old, nu}, Default: old, Lookups: []route.Lookup{
			route.NewStatic([]route.Entry{{Match: "@example.org", Upstream: "new"}}), mf,
		}}
	}, nil)
	inbox := func(user string) int {
		c := tp.dialImplicit(t)
		if got := c.plainLogin("a", user, users[user]); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("%s: %q", user, got)
		}
		return c.inboxSize("s")
	}
	// The first user of each Dovecot (sorted) gets Messages, the others
	// OtherUsersMessages: alice@example.org sorts first, so ask the others.
	if n := inbox("bob@example.net"); n != 2 {
		t.Errorf("bob (map file -> new) is on the server with %d messages", n)
	}
	if n := inbox("carol@example.net"); n != 1 {
		t.Errorf("carol (default -> old) is on the server with %d messages", n)
	}
	c := tp.dialImplicit(t)
	if got := c.plainLogin("a", "alice@example.org", users["alice@example.org"]); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("alice: %q", got)
	}
	if ca, cb := oldDC.AuthAttempts(), newDC.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.ByUser["alice@example.org"] == 1 }); ca.ByUser["alice@example.org"] != 0 {
		t.Errorf("alice (route -> new) reached old: %+v / %+v", ca, cb)
	}
	for _, si := range tp.srv.ListSessions() { // alice's session is open
		if si.User == "alice@example.org" && si.Upstream != newDC.Addr {
			t.Errorf("imapgate sessions shows alice on %s, want the server routed to, %s", si.Upstream, newDC.Addr)
		}
	}
	os.WriteFile(mapPath, []byte("# bob is back\n"), 0o644)
	os.Chtimes(mapPath, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if n := inbox("bob@example.net"); n != 1 {
		t.Errorf("bob after the map file edit is on the server with %d messages, want old's 1", n)
	}
	want := map[string][]string{"bob@example.net": {"new/map_file", "old/default"}, "carol@example.net": {"old/default"}, "alice@example.org": {"new/static"}}
	got := map[string][]string{}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			got[e.User] = append(got[e.User], e.UpstreamName+"/"+e.Route)
		}
	}
	for u, w := range want {
		if strings.Join(got[u], ",") != strings.Join(w, ",") {
			t.Errorf("%s routed %v, want %v", u, got[u], w)
		}
	}
}

// TestFailedOrRefusingLookupNeverReachesAnUpstream: an auth_http service
// that is down gives NO [UNAVAILABLE] (route_failed), one that refuses
// gives NO [AUTHENTICATIONFAILED] after its Auth-Wait (route_refused), one
// that names a server the config does not know is a failure too; in no
// case does the default upstream, a real Dovecot, see a login.
func TestFailedOrRefusingLookupNeverReachesAnUpstream(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Auth-User") {
		case "user1":
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "1")
		case "user2":
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", "192.0.2.99")
			w.Header().Set("Auth-Port", "143")
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer svc.Close()
	g := routedGroup("dovecot", time.Hour, d.Addr)
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{g}, Default: g, Lookups: []route.Lookup{&route.HTTP{URL: svc.URL}}}
	}, nil)
	pass := proxytest.DefaultUsers()
	c := tp.dialImplicit(t)
	start := time.Now()
	if got := c.plainLogin("a", "user1", pass["user1"]); got != "a NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Errorf("refused: %q", got)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("refusal answered after %s, before its Auth-Wait of 1s", el)
	}
	if got := c.plainLogin("b", "user2", pass["user2"]); !strings.HasPrefix(got, "b NO [UNAVAILABLE]") {
		t.Errorf("unknown server: %q", got)
	}
	if got := c.plainLogin("c", "nobody", "x"); !strings.HasPrefix(got, "c NO [UNAVAILABLE]") {
		t.Errorf("service failing: %q", got)
	}
	reasons := map[string]string{}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			reasons[e.User] = e.Result + "/" + e.Reason + "/" + e.Route
		}
	}
	want := map[string]string{"user1": "failure/route_refused/auth_http", "user2": "error/route_failed/auth_http", "nobody": "error/route_failed/"}
	for u, w := range want {
		if reasons[u] != w {
			t.Errorf("%s: %s, want %s", u, reasons[u], w)
		}
	}
	if c := d.AuthAttempts(); c.Success+c.Failure != 0 {
		t.Fatalf("Dovecot saw %+v; want no login at all", c)
	}
}

// TestRoutingByDomainAndMapFileBetweenDovecotAndCyrus: a site half
// migrated from a real Dovecot 2.3 to a real Cyrus IMAP 3.6. A [[route]]
// sends example.net to Cyrus, a map file sends erin@example.org there
// too, everyone else stays on the default, Dovecot. Cyrus knows its users
// by bare names (no virtdomains), so its upstream has user_template
// "{local}". Both servers know every user with the same password, so a
// login routed to the wrong one would succeed: the witnesses are the
// servers themselves. Dovecot's INBOXes hold 1 message and Cyrus's 3;
// Dovecot's log has alice's login and nobody else's; Cyrus's mailboxes,
// read straight from Cyrus afterwards, carry the flag each routed
// session set.
func TestRoutingByDomainAndMapFileBetweenDovecotAndCyrus(t *testing.T) {
	users := map[string]string{"alice@example.org": "Alice-Pass-1", "dave@example.net": "Dave-Pass-1", "erin@example.org": "Erin-Pass-1"}
	dc := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: users, Messages: 1, OtherUsersMessages: 1})
	cy := proxytest.StartCyrus(t, proxytest.CyrusOptions{Users: map[string]string{"dave": users["dave@example.net"], "erin": users["erin@example.org"]}, Messages: 3})
	dovecot := routedGroup("dovecot", time.Hour, dc.Addr)
	cyrus := routedGroup("cyrus", time.Hour, cy.Addr)
	cyrus.Members[0].UserTemplate = "{local}"
	mapPath := filepath.Join(t.TempDir(), "routes.map")
	if err := os.WriteFile(mapPath, []byte("erin@example.org cyrus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mf := &route.MapFile{Path: mapPath}
	if err := mf.Reload(); err != nil {
		t.Fatal(err)
	}
	tp := startProxyTo(t, dc.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{dovecot, cyrus}, Default: dovecot, Lookups: []route.Lookup{
			route.NewStatic([]route.Entry{{Match: "@example.net", Upstream: "cyrus"}}), mf,
		}}
	}, nil)

	for _, tc := range []struct {
		user     string
		messages int // 1: Dovecot, 3: Cyrus
	}{
		{"alice@example.org", 1}, // default
		{"dave@example.net", 3},  // [[route]] @example.net
		{"erin@example.org", 3},  // map file
	} {
		c := tp.dialImplicit(t)
		if got := c.plainLogin("a", tc.user, users[tc.user]); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("%s: %q", tc.user, got)
		}
		if n := c.inboxSize("s"); n != tc.messages {
			t.Errorf("%s is on the server with %d messages, want %d", tc.user, n, tc.messages)
		}
		c.send("f STORE 1 +FLAGS (routed-here)")
		c.expect("f OK")
		c.send("z LOGOUT")
		c.expect("z OK")
	}

	seen := dc.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.ByUser["alice@example.org"] == 1 })
	if seen.Success != 1 || seen.Failure != 0 {
		t.Errorf("Dovecot's log has %+v, want alice's one login and nothing else", seen)
	}
	for _, u := range []string{"dave", "erin"} {
		if flags := cyrusFlags(t, cy, u); !strings.Contains(flags, "routed-here") {
			t.Errorf("Cyrus's INBOX of %s: message 1 has %s, want the flag its routed session set", u, flags)
		}
	}
	want := map[string]string{"alice@example.org": "dovecot/default", "dave@example.net": "cyrus/static", "erin@example.org": "cyrus/map_file"}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			if got := e.UpstreamName + "/" + e.Route; got != want[e.User] {
				t.Errorf("%s routed %s, want %s", e.User, got, want[e.User])
			}
		}
	}
}

// cyrusFlags logs in to Cyrus directly as user and returns the FLAGS of
// INBOX's first message, as Cyrus has them.
func cyrusFlags(t *testing.T, cy *proxytest.Cyrus, user string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", cy.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("* OK")
	if got := c.plainLogin("a", user, cy.Users[user]); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("straight to Cyrus as %s: %q", user, got)
	}
	c.send("e EXAMINE INBOX")
	c.expect("e OK")
	c.send("f FETCH 1 (FLAGS)")
	return c.expect("* 1 FETCH")
}
