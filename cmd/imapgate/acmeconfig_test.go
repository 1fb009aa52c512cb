package main

import (
	"testing"
	"time"
)

func TestHTTP01ListensOnPort80ByDefault(t *testing.T) {
	c := mustParse(t, "testdata/config/good-acme-http-01.toml")
	if got := c.TLS.ACME.ChallengeListen; got != ":80" {
		t.Fatalf("http-01 challenge_listen = %q, want \":80\"", got)
	}
	if got := mustParse(t, "testdata/config/good-acme-tls-alpn.toml").TLS.ACME.ChallengeListen; got != ":443" {
		t.Fatalf("tls-alpn-01 challenge_listen = %q, want \":443\"", got)
	}
}

func TestOnDemandKeysReachTheirFields(t *testing.T) {
	a := mustParse(t, "testdata/config/good-acme-on-demand.toml").TLS.ACME
	if !a.OnDemand || len(a.OnDemandAllow) != 3 || a.OnDemandAllow[1] != ".customers.example.net" ||
		a.OnDemandPerHour != 5 || a.RenewCheckInterval.Duration != time.Hour {
		t.Fatalf("got %+v", a)
	}
	m, err := newACME(a)
	if err != nil {
		t.Fatalf("newACME: %v", err)
	}
	m.Close()
}
