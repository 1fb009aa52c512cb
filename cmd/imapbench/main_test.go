package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

func TestRunLatencyPrintsJSON(t *testing.T) {
	up := startUpstream(t, 1)
	var out, errOut bytes.Buffer
	code := run([]string{"latency", "--addr", up.Addr, "--tls", "none", "--count", "20", "--json", "--quiet"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var res latencyResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a JSON result: %v\n%s", err, out.String())
	}
	if res.Scenario != "latency" || res.Count != 20 || res.Target.Addr != up.Addr || res.Target.Auth != "plain" {
		t.Errorf("result = %+v", res)
	}
	if strings.Contains(out.String(), testPass) || strings.Contains(errOut.String(), testPass) {
		t.Error("the password appears in the output")
	}
}

func TestRunIdlePrintsATable(t *testing.T) {
	up := startUpstream(t, 1, testMessage(1, 1000))
	var out, errOut bytes.Buffer
	code := run([]string{"idle", "--addr", up.Addr, "--tls", "none", "--sessions", "5", "--hold", "200ms",
		"--source-count", "2", "--pid", itoa(os.Getpid())}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"sessions opened  5 of 5", "per session", "sources=2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "holding sessions in IDLE") {
		t.Errorf("no progress on stderr:\n%s", errOut.String())
	}
}

func TestRunFailsWhenNothingSucceeds(t *testing.T) {
	up := startUpstream(t, 1)
	var out, errOut bytes.Buffer
	code := run([]string{"logins", "--addr", up.Addr, "--tls", "none", "--password", "wrong", "--duration", "200ms", "--workers", "1", "--quiet"}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), "AUTHENTICATE: NO") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}

func TestRunRejectsBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "Usage:"},
		{[]string{"bench"}, `unknown scenario "bench"`},
		{[]string{"idle"}, "--addr HOST:PORT is required"},
		{[]string{"idle", "--addr", "localhost"}, "--addr"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--tls", "startls"}, `"startls" is not one of implicit, starttls, none`},
		{[]string{"fetch", "--addr", "127.0.0.1:993", "--sessions", "10"}, "--sessions is a flag of idle"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--cafile", "x.pem", "--insecure"}, "choose one"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--cafile", "/nonexistent.pem"}, "--cafile"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--users-count", "5", "--users-pattern", "user%s"}, "must contain %d once"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--sources", "10.0.0.1"}, "not in 127.0.0.0/8"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--pid", "nginx"}, "not a process id"},
		{[]string{"idle", "--addr", "127.0.0.1:993", "--hold", "20m"}, "does not fit in --max-time"},
		{[]string{"latency", "--addr", "127.0.0.1:993", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(tt.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", tt.args, code, errOut.String(), tt.want)
		}
	}
}

func TestParseSources(t *testing.T) {
	tests := []struct {
		list        string
		count       int
		n           int
		first, last string
	}{
		{"", 0, 0, "", ""},
		{"", 16, 16, "127.1.0.1", "127.1.0.16"},
		{"", 300, 300, "127.1.0.1", "127.1.1.44"},
		{"127.0.0.1", 0, 1, "127.0.0.1", "127.0.0.1"},
		{"127.1.0.0/24", 0, 254, "127.1.0.1", "127.1.0.254"},
		{"127.0.0.1, 127.2.0.0/30", 0, 3, "127.0.0.1", "127.2.0.2"},
		{"127.3.0.7/32", 0, 1, "127.3.0.7", "127.3.0.7"},
		{"::1", 0, 1, "::1", "::1"},
	}
	for _, tt := range tests {
		got, err := parseSources(tt.list, tt.count)
		if err != nil || len(got) != tt.n {
			t.Errorf("parseSources(%q, %d) = %d addresses, %v; want %d", tt.list, tt.count, len(got), err, tt.n)
			continue
		}
		if tt.n > 0 && (got[0] != netip.MustParseAddr(tt.first) || got[tt.n-1] != netip.MustParseAddr(tt.last)) {
			t.Errorf("parseSources(%q, %d) = %v .. %v, want %s .. %s", tt.list, tt.count, got[0], got[tt.n-1], tt.first, tt.last)
		}
	}
	for _, bad := range []struct {
		list  string
		count int
	}{{"127.0.0.1", 3}, {"", -1}, {"", 70000}, {"192.168.0.1", 0}, {"127.0.0.0/8", 0}, {"127.0.0.300", 0}, {"::2", 0}} {
		if _, err := parseSources(bad.list, bad.count); err == nil {
			t.Errorf("parseSources(%q, %d): no error", bad.list, bad.count)
		}
	}
}

func TestErrorKindLeavesOutPortsAndAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = dial(testContext(t), target{Addr: addr, TLS: tlsNone}, netip.MustParseAddr("127.1.0.9"), 4096)
	if got := errorKind(err); got != "connect: connection refused" {
		t.Errorf("errorKind(%v) = %q", err, got)
	}
}
