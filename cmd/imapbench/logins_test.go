package main

import (
	"testing"
	"time"
)

func TestLoginsPlaintext(t *testing.T) {
	up := startUpstream(t, 1)
	res, err := runLogins(testContext(t), loginsOptions{Target: plainTarget(up), Workers: 2, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Logins == 0 || res.Errors != 0 {
		t.Fatalf("%d logins, %d errors (%v); want some and none", res.Logins, res.Errors, res.ErrorKinds)
	}
	if res.LoginsPerSecond <= 0 || res.Latency.P50Micros <= 0 || res.Latency.P99Micros < res.Latency.P50Micros {
		t.Errorf("%.0f logins/s, p50 %.0fµs, p99 %.0fµs", res.LoginsPerSecond, res.Latency.P50Micros, res.Latency.P99Micros)
	}
	if res.Seconds < 1 || res.Seconds > 5 {
		t.Errorf("ran %.2fs for a 1s duration", res.Seconds)
	}
}

func TestLoginsStopAtMaxLogins(t *testing.T) {
	up := startUpstream(t, 1)
	res, err := runLogins(testContext(t), loginsOptions{Target: plainTarget(up), Workers: 4, Duration: time.Minute, MaxLogins: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Logins != 10 {
		t.Fatalf("%d logins, want 10", res.Logins)
	}
}

func TestLoginsCountWrongPasswords(t *testing.T) {
	up := startUpstream(t, 1)
	tg := plainTarget(up)
	tg.Password = "wrong"
	res, err := runLogins(testContext(t), loginsOptions{Target: tg, Workers: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Logins != 0 || res.Errors == 0 || len(res.ErrorKinds) != 1 {
		t.Fatalf("%d logins, %d errors %v; want only AUTHENTICATE errors", res.Logins, res.Errors, res.ErrorKinds)
	}
}

// Each login is a full handshake unless --resume shares a session cache.
func TestLoginsOverTLSResumeOnlyWhenAsked(t *testing.T) {
	s := startTLSServer(t)
	cfg, err := clientTLSConfig(s.caFile, false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		tls  tlsMode
		addr string
	}{{tlsImplicit, s.implicit}, {tlsStartTLS, s.starttls}} {
		tg := target{Addr: mode.addr, TLS: mode.tls, TLSConfig: cfg, User: testUser, Password: testPass, Timeout: 10 * time.Second}
		for _, resume := range []bool{false, true} {
			res, err := runLogins(testContext(t), loginsOptions{Target: tg, Workers: 2, Duration: 500 * time.Millisecond, Resume: resume})
			if err != nil {
				t.Fatal(err)
			}
			if res.Logins == 0 || res.Errors != 0 {
				t.Fatalf("%s resume=%v: %d logins, %d errors %v", mode.tls, resume, res.Logins, res.Errors, res.ErrorKinds)
			}
			if !resume && res.Resumed != 0 {
				t.Errorf("%s: %d of %d logins resumed without --resume", mode.tls, res.Resumed, res.Logins)
			}
			if resume && res.Resumed == 0 {
				t.Errorf("%s: none of %d logins resumed with --resume", mode.tls, res.Logins)
			}
		}
	}
	if cfg.ClientSessionCache != nil {
		t.Error("runLogins changed the caller's TLS config")
	}
}

func TestLoginsRefuseAnUntrustedCertificate(t *testing.T) {
	s := startTLSServer(t)
	cfg, err := clientTLSConfig("", false, "localhost") // the system's roots
	if err != nil {
		t.Fatal(err)
	}
	tg := target{Addr: s.implicit, TLS: tlsImplicit, TLSConfig: cfg, User: testUser, Password: testPass, Timeout: 10 * time.Second}
	res, err := runLogins(testContext(t), loginsOptions{Target: tg, Workers: 1, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Logins != 0 || res.Errors == 0 {
		t.Fatalf("%d logins against an unknown CA, want none", res.Logins)
	}
	t.Logf("errors: %v", res.ErrorKinds)
}
