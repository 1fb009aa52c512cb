package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The target of a run: the server under load, how to reach IMAP on it
// (tlsMode) and how to log in, shared by every scenario.

// tlsMode is how a connection reaches the IMAP protocol.
type tlsMode string

const (
	tlsImplicit tlsMode = "implicit" // TLS from the first byte (port 993)
	tlsStartTLS tlsMode = "starttls" // plaintext greeting, then STARTTLS
	tlsNone     tlsMode = "none"     // plaintext throughout
)

func parseTLSMode(s string) (tlsMode, error) {
	switch m := tlsMode(strings.ToLower(s)); m {
	case tlsImplicit, tlsStartTLS, tlsNone:
		return m, nil
	}
	return "", fmt.Errorf("--tls: %q is not one of implicit, starttls, none", s)
}

// target is the server under load and how to log in to it. It is shared
// by every scenario; the zero values of optional fields are documented.
type target struct {
	// Addr is the host:port to connect to. Required.
	Addr string
	// TLS is how to reach IMAP. If empty, tlsImplicit is used.
	TLS tlsMode
	// TLSConfig is used for implicit TLS and STARTTLS. If nil, the
	// system roots verify a certificate for the host of Addr.
	TLSConfig *tls.Config
	// Login uses the LOGIN command instead of AUTHENTICATE PLAIN with
	// SASL-IR (for plaintext baselines against a server directly).
	Login bool
	// User logs in every session unless UsersCount is set.
	User string
	// UsersPattern and UsersCount spread sessions over UsersCount users:
	// session i logs in as UsersPattern with its one %d replaced by
	// i mod UsersCount + 1. All users share Password.
	UsersPattern string
	UsersCount   int
	// Password is sensitive: it is never logged nor written to results.
	Password string
	// Timeout bounds each step (connect, handshake, each response). If
	// zero, 10s is used.
	Timeout time.Duration
	// Sources are local addresses to connect from, used round-robin so
	// that many sessions fit the ephemeral port range. If empty, the
	// kernel chooses.
	Sources []netip.Addr
}

func (t target) timeout() time.Duration {
	if t.Timeout <= 0 {
		return 10 * time.Second
	}
	return t.Timeout
}

func (t target) mode() tlsMode {
	if t.TLS == "" {
		return tlsImplicit
	}
	return t.TLS
}

// user is the login name of session (or login cycle) i.
func (t target) user(i int) string {
	if t.UsersCount <= 0 {
		return t.User
	}
	return strings.Replace(t.UsersPattern, "%d", strconv.Itoa(i%t.UsersCount+1), 1)
}

// source is the local address of connection i, or the zero Addr.
func (t target) source(i int) netip.Addr {
	if len(t.Sources) == 0 {
		return netip.Addr{}
	}
	return t.Sources[i%len(t.Sources)]
}

// summary is how results name the target.
func (t target) summary() targetSummary {
	auth := "plain"
	if t.Login {
		auth = "login"
	}
	s := targetSummary{Addr: t.Addr, TLS: string(t.mode()), Auth: auth, Sources: len(t.Sources)}
	if t.UsersCount > 0 {
		s.Users = t.UsersCount
	} else {
		s.Users = 1
	}
	return s
}

// targetSummary identifies the target in every result.
type targetSummary struct {
	Addr    string `json:"addr"`
	TLS     string `json:"tls"`
	Auth    string `json:"auth"`    // "plain" (AUTHENTICATE PLAIN) or "login"
	Users   int    `json:"users"`   // distinct user names used
	Sources int    `json:"sources"` // source addresses; 0: the kernel's choice
}

func (s targetSummary) String() string {
	src := "kernel's choice"
	if s.Sources > 0 {
		src = strconv.Itoa(s.Sources)
	}
	return fmt.Sprintf("%s tls=%s auth=%s users=%d sources=%s", s.Addr, s.TLS, s.Auth, s.Users, src)
}

func (t target) tlsConfig() *tls.Config {
	if t.TLSConfig != nil {
		return t.TLSConfig
	}
	host, _, _ := net.SplitHostPort(t.Addr)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}
