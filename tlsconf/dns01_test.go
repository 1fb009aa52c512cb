package tlsconf

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// These are fast checks of the DNS-01 publishers. The real thing (BIND 9
// taking the updates, Pebble reading the records) is tested end to end in
// cmd/imapgate (TestACMEDNS01).

const testSecret = "c2VjcmV0IGZvciB0ZXN0cyBvbmx5"

// updateServer is a miekg/dns server that records the dynamic updates
// whose TSIG verifies.
type updateServer struct {
	addr string
	mu   sync.Mutex
	got  []*dns.Msg
}

func startUpdateServer(t *testing.T) *updateServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &updateServer{addr: ln.Addr().String()}
	srv := &dns.Server{Listener: ln, TsigSecret: map[string]string{"acme-key.": testSecret},
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }} // UPDATE too
	srv.Handler = dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.IsTsig() == nil || w.TsigStatus() != nil {
			m.Rcode = dns.RcodeNotAuth
		} else {
			u.mu.Lock()
			u.got = append(u.got, r)
			u.mu.Unlock()
		}
		if t := r.IsTsig(); t != nil {
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return u
}

func txt(name, value string) []libdns.Record {
	return []libdns.Record{libdns.TXT{Name: name, Text: value, TTL: 30 * time.Second}}
}

func TestRFC2136SendsSignedUpdates(t *testing.T) {
	u := startUpdateServer(t)
	r := &RFC2136{Server: u.addr, KeyName: "acme-key", Secret: testSecret}
	ctx := context.Background()
	if _, err := r.AppendRecords(ctx, "example.test.", txt("_acme-challenge.imap", "token-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteRecords(ctx, "example.test", txt("_acme-challenge.imap", "token-1")); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) != 2 {
		t.Fatalf("server took %d updates, want 2", len(u.got))
	}
	add, del := u.got[0], u.got[1]
	if add.Question[0].Name != "example.test." || add.Opcode != dns.OpcodeUpdate {
		t.Fatalf("update for %v opcode %d", add.Question, add.Opcode)
	}
	rr, ok := add.Ns[0].(*dns.TXT)
	if !ok || rr.Hdr.Name != "_acme-challenge.imap.example.test." || rr.Txt[0] != "token-1" || rr.Hdr.Ttl != 30 || rr.Hdr.Class != dns.ClassINET {
		t.Fatalf("added %v", add.Ns[0])
	}
	if d := del.Ns[0].Header(); d.Class != dns.ClassNONE || d.Name != "_acme-challenge.imap.example.test." {
		t.Fatalf("deleted %v, want a delete of that one record (class NONE)", del.Ns[0])
	}
}

func TestRFC2136WrongSecretSaysSo(t *testing.T) {
	u := startUpdateServer(t)
	r := &RFC2136{Server: u.addr, KeyName: "acme-key", Secret: "d3Jvbmcgc2VjcmV0"}
	_, err := r.AppendRecords(context.Background(), "example.test.", txt("_acme-challenge", "v"))
	if err == nil || !strings.Contains(err.Error(), "did not accept TSIG key acme-key") || !strings.Contains(err.Error(), "_acme-challenge.example.test.") {
		t.Fatalf("err = %v", err)
	}
}

func TestRFC2136Check(t *testing.T) {
	for _, tt := range []struct {
		r    RFC2136
		want string
	}{
		{RFC2136{KeyName: "k", Secret: testSecret}, "no server"},
		{RFC2136{Server: "127.0.0.1:53", Secret: testSecret}, "no TSIG key name"},
		{RFC2136{Server: "127.0.0.1:53", KeyName: "k"}, "empty TSIG secret"},
		{RFC2136{Server: "127.0.0.1:53", KeyName: "k", Secret: "!!"}, "not base64"},
		{RFC2136{Server: "127.0.0.1:53", KeyName: "k", Secret: testSecret, Algorithm: "hmac-md5"}, "hmac-md5"},
		{RFC2136{Server: "127.0.0.1:53", KeyName: "k", Secret: testSecret, Algorithm: "HMAC-SHA512"}, ""},
	} {
		err := tt.r.Check()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: err = %v, want %q", tt.r, err, tt.want)
		}
	}
}

func TestExecHookRunsPresentAndCleanup(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "calls")
	hook := writeScript(t, dir, "hook", "echo \"$1 $2 $3\" >> "+record)
	h := &ExecHook{Program: hook}
	ctx := context.Background()
	if _, err := h.AppendRecords(ctx, "example.test.", txt("_acme-challenge.imap", "v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DeleteRecords(ctx, "example.test", txt("_acme-challenge.imap", "v1")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(record)
	want := "present _acme-challenge.imap.example.test. v1\ncleanup _acme-challenge.imap.example.test. v1\n"
	if string(got) != want {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, want)
	}
}

func TestExecHookFailureGivesStatusAndReason(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, dir, "hook", "echo starting; echo 'API said: token expired' >&2; exit 4")
	_, err := (&ExecHook{Program: hook}).AppendRecords(context.Background(), "example.test.", txt("_acme-challenge", "v"))
	if err == nil || !strings.Contains(err.Error(), "exit status 4: API said: token expired") || !strings.Contains(err.Error(), "present _acme-challenge.example.test.") {
		t.Fatalf("err = %v", err)
	}
}

func TestExecHookTimeout(t *testing.T) {
	hook := writeScript(t, t.TempDir(), "hook", "exec sleep 30")
	start := time.Now()
	_, err := (&ExecHook{Program: hook, Timeout: 200 * time.Millisecond}).AppendRecords(context.Background(), "example.test.", txt("_acme-challenge", "v"))
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded after 200ms") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("hook ran %v past its timeout", took)
	}
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
