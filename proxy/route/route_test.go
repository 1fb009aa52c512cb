package route

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStaticUserWinsOverDomain(t *testing.T) {
	s := NewStatic([]Entry{{Match: "@Example.org", Upstream: "exchange"}, {Match: "Alice@example.org", Upstream: "dovecot"}})
	tests := []struct{ user, want string }{
		{"alice@EXAMPLE.org", "dovecot"},
		{"bob@example.ORG", "exchange"},
		{"carol@example.net", ""},
		{"example.org", ""},
	}
	for _, tt := range tests {
		a, err := s.Lookup(context.Background(), Query{User: tt.user})
		if tt.want == "" {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: %+v, %v; want ErrNotFound", tt.user, a, err)
			}
			continue
		}
		if err != nil || a.Server != tt.want || a.Source != "static" {
			t.Errorf("%s: %+v, %v; want %s", tt.user, a, err, tt.want)
		}
	}
}

func TestParseMapNamesTheBadLine(t *testing.T) {
	tests := []struct{ in, err string }{
		{"# only a comment\n\nalice@x dovecot # trailing\n@x exchange\n", ""},
		{"alice@x\n", "m:1: want"},
		{"ok@x a\n@ b\n", "m:2: "},
		{"a@x one\nA@X two\n", "m:2: A@X is already on line 1"},
	}
	for _, tt := range tests {
		_, err := ParseMap("m", []byte(tt.in))
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%q: %v; want %q", tt.in, err, tt.err)
		}
	}
}

func FuzzParseMap(f *testing.F) {
	f.Add([]byte("alice@x dovecot\n@x exchange # c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseMap("m", data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if CheckMatch(e.Match) != nil || e.Upstream == "" || strings.ContainsAny(e.Upstream, " \t\n") {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

// TestMapFileChangeIsSeenAndABadOneKept: the file moves a domain to another
// upstream and the next lookup after the check interval follows it; a
// broken edit afterwards leaves the last good map in force.
func TestMapFileChangeIsSeenAndABadOneKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.map")
	write := func(s string, mtime time.Time) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(path, mtime, mtime)
	}
	now := time.Now()
	write("@example.org a\n", now.Add(-time.Hour))
	m := &MapFile{Path: path, CheckEvery: time.Nanosecond, Check: func(s *Static) error {
		for _, n := range s.Upstreams() {
			if n != "a" && n != "b" {
				return errors.New(n + " is no upstream")
			}
		}
		return nil
	}}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	lookup := func() string {
		a, err := m.Lookup(context.Background(), Query{User: "x@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		return a.Server
	}
	if got := lookup(); got != "a" {
		t.Fatalf("before: %s", got)
	}
	write("@example.org b\n", now.Add(-time.Minute))
	if got := lookup(); got != "b" {
		t.Fatalf("after the edit: %s", got)
	}
	write("@example.org c\n", now)
	if got := lookup(); got != "b" {
		t.Fatalf("after an edit naming an unknown upstream: %s, want the last good b", got)
	}
}

type countingLookup struct {
	n   atomic.Int32
	err error
}

func (c *countingLookup) Lookup(context.Context, Query) (Answer, error) {
	c.n.Add(1)
	return Answer{Server: "s"}, c.err
}

func TestCacheKeepsAnswersNotErrorsAndStaysBounded(t *testing.T) {
	next := &countingLookup{}
	c := Cached(next, 2, time.Hour)
	for _, u := range []string{"a", "A", "b", "c", "a"} {
		c.Lookup(context.Background(), Query{User: u})
	}
	// a (miss), A (hit), b, c (evicts a), a (miss again).
	if n := next.n.Load(); n != 4 || c.Len() != 2 {
		t.Fatalf("asked %d times, %d held; want 4 and 2", n, c.Len())
	}
	failing := &countingLookup{err: errors.New("down")}
	c = Cached(failing, 10, time.Hour)
	c.Lookup(context.Background(), Query{User: "a"})
	c.Lookup(context.Background(), Query{User: "a"})
	c.Lookup(context.Background(), Query{User: "b", Password: "p"})
	c.Lookup(context.Background(), Query{User: "b", Password: "p"})
	if n := failing.n.Load(); n != 4 || c.Len() != 0 {
		t.Fatalf("errors and password queries: asked %d times, %d held; want 4 and 0", n, c.Len())
	}
}

// nginxStyleResponder answers the way nginx's documentation of
// ngx_mail_auth_http_module describes an auth service: request headers
// in, Auth-Status (and Auth-Server, Auth-Port or Auth-Wait) out, the body
// ignored. alice is on 10.0.0.6:143; carol is refused after a wait; a
// request without the shared secret is answered 403.
func nginxStyleResponder(t *testing.T, seen chan<- http.Header) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		if r.Header.Get("X-Auth-Key") != "shared" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		user, _ := url.PathUnescape(r.Header.Get("Auth-User"))
		switch user {
		case "alice smith@example.org":
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", "10.0.0.6")
			w.Header().Set("Auth-Port", "143")
		case "carol@example.org":
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "3")
		case "dave@example.org":
			// OK without a server: broken.
			w.Header().Set("Auth-Status", "OK")
		}
		w.Write([]byte("ignored"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPLookupSpeaksNginxAuthHTTP(t *testing.T) {
	seen := make(chan http.Header, 10)
	srv := nginxStyleResponder(t, seen)
	h := &HTTP{URL: srv.URL, Header: http.Header{"X-Auth-Key": {"shared"}}, Timeout: 2 * time.Second}
	q := Query{User: "alice smith@example.org", Password: "Secret 1%", Method: "plain", Attempt: 2,
		ClientIP: netip.MustParseAddr("192.0.2.42"), Secure: true}

	a, err := h.Lookup(context.Background(), q)
	if err != nil || a.Server != "10.0.0.6:143" || a.Source != "auth_http" {
		t.Fatalf("alice: %+v, %v", a, err)
	}
	got := <-seen
	want := map[string]string{"Auth-Method": "plain", "Auth-User": "alice%20smith@example.org", "Auth-Protocol": "imap",
		"Auth-Login-Attempt": "2", "Client-Ip": "192.0.2.42", "Auth-Ssl": "on", "Auth-Pass": ""}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("request header %s = %q, want %q", k, got.Get(k), v)
		}
	}

	h.SendPassword = true
	h.Lookup(context.Background(), q)
	if got := (<-seen).Get("Auth-Pass"); got != "Secret%201%25" {
		t.Errorf("Auth-Pass with send_password: %q", got)
	}

	_, err = h.Lookup(context.Background(), Query{User: "carol@example.org"})
	var refused *RefusedError
	if !errors.As(err, &refused) || !errors.Is(err, ErrRefused) || refused.Wait != 3*time.Second || refused.Status != "Invalid login or password" {
		t.Fatalf("carol: %v; want a refusal with a 3s wait", err)
	}
	<-seen
	for _, tt := range []struct {
		user string
		h    *HTTP
	}{
		{"dave@example.org", h},
		{"eve@example.org", h},                           // no Auth-Status at all
		{"alice smith@example.org", &HTTP{URL: srv.URL}}, // 403 without the secret
	} {
		_, err := tt.h.Lookup(context.Background(), Query{User: tt.user})
		if err == nil || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v; want a failure", tt.user, err)
		}
		<-seen
	}
}

func TestHTTPLookupTimesOut(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	start := time.Now()
	_, err := (&HTTP{URL: srv.URL, Timeout: 200 * time.Millisecond}).Lookup(context.Background(), Query{User: "a"})
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
}

func TestLastCN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/o=First Organization/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn=EXCH01", "EXCH01"},
		{"cn=EXCH02,cn=Servers,dc=corp,dc=example", "EXCH02"},
		{"mail1.example.org", ""},
		{"mail1.example.org:143", ""},
	}
	for _, tt := range tests {
		if got := lastCN(tt.in); got != tt.want {
			t.Errorf("lastCN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
