package main

import (
	"os"
	"testing"
)

// TestRouterFromConfig: good-upstreams.toml becomes two upstream groups,
// one per [[upstream]] with an address each, the first the default, and
// the four lookups in their fixed order: [[route]], map file, LDAP,
// auth_http.
func TestRouterFromConfig(t *testing.T) {
	if err := os.Chmod("testdata/config/files/master.secret", 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, "testdata/config/good-upstreams.toml")
	r, err := newRouter(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Upstreams) != 2 || r.Default != r.Upstreams[0] || r.Default.Name != "dovecot" || len(r.Default.Members) != 2 || r.Default.Balance != "failover" {
		t.Fatalf("upstreams %+v, default %+v", r.Upstreams, r.Default)
	}
	if m := r.Upstreams[1].Members[0]; m.Address != "10.0.1.5:993" || m.TLSConfig == nil || m.TLSConfig.ServerName != "exch01.corp.example" {
		t.Errorf("exchange member %+v", m)
	}
	if got := r.Default.Members[1].TLSConfig.ServerName; got != "10.0.0.6" {
		t.Errorf("second dovecot address verified as %q, want its own host", got)
	}
	if len(r.Lookups) != 4 || r.SendPassword {
		t.Errorf("%d lookups (send password %v), want 4 without the password", len(r.Lookups), r.SendPassword)
	}
}
