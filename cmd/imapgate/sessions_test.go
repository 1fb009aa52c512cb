package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestSessionsAndKickThroughTheRunningServe: user1's phone (an app
// password) and user2 (its own password) idle at the real Dovecot through
// serve. `imapgate sessions` lists both with credential, mechanism,
// listener and upstream, as a table and as JSON; `kick --credential`
// ends the phone within a second and `kick USER` ends user2, both as
// session_end kicked; the list is then empty.
func TestSessionsAndKickThroughTheRunningServe(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	dir := t.TempDir()
	socket := filepath.Join(dir, "admin.sock")
	config := writeAppPasswordConfig(t, dir, dovecotUpstream(d, "starttls"))
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[admin]\nsocket = %q\n", socket)
	f.Close()
	phonePass, phoneID := addWithCLI(t, config, "user1", "--label", "phone")
	user2Pass := proxytest.DefaultUsers()["user2"]
	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(filepath.Join(dir, "master.secret")),
		auth:     storeKey(dir),
		tail:     fmt.Sprintf("[admin]\nsocket = %q\n", socket),
		secrets:  []string{phonePass, user2Pass, e2eMasterSecret},
	})
	idle := func(user, pass string) *client {
		c := g.dialTLS(t)
		c.send("a AUTHENTICATE PLAIN " + plainIR(user, pass))
		c.expect("a OK")
		c.send("b SELECT INBOX")
		c.expect("b OK")
		c.send("c IDLE")
		c.expect("+ ")
		return c
	}
	phone, user2 := idle("user1", phonePass), idle("user2", user2Pass)

	code, out, errOut := cli(t, "sessions", "--config", config)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "USER") {
		t.Fatalf("sessions: exit %d, want a header and two rows:\n%s%s", code, out, errOut)
	}
	for _, want := range [][]string{
		{"user1", "phone", "app_password", phoneID, "PLAIN", g.implicit, d.Addr},
		{"user2", "-", "-", "-", "PLAIN", g.implicit, d.Addr},
	} {
		row := strings.Join(strings.Fields(lines[1]), " ")
		if want[0] == "user2" {
			row = strings.Join(strings.Fields(lines[2]), " ")
		}
		if !strings.HasPrefix(row, strings.Join(want[:5], " ")+" 127.0.0.1:") || !strings.Contains(row, " "+want[5]+" "+want[6]+" ") {
			t.Errorf("sessions row %q, want %q", row, want)
		}
	}
	code, out, _ = cli(t, "sessions", "--json", "--config", config)
	var first proxy.SessionInfo
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&first); code != 0 || err != nil ||
		first.User != "user1" || first.CredentialID != phoneID || first.Listener != g.implicit || first.BytesOut == 0 {
		t.Errorf("sessions --json: exit %d, %v, first %+v:\n%s", code, err, first, out)
	}

	start := time.Now()
	if code, out, errOut := cli(t, "kick", "--credential", phoneID, "--config", config); code != 0 || !strings.Contains(out, "ended 1 session(s) of credential "+phoneID) {
		t.Fatalf("kick --credential: exit %d: %s%s", code, out, errOut)
	}
	phone.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := phone.r.ReadString('\n'); err == nil {
		t.Fatal("the phone's session is still open after kick")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the phone's session ended %v after kick, want within a second", took)
	}
	if code, out, errOut := cli(t, "kick", "user2", "--config", config); code != 0 || !strings.Contains(out, "ended 1 session(s) of user user2") {
		t.Fatalf("kick user2: exit %d: %s%s", code, out, errOut)
	}
	user2.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := user2.r.ReadString('\n'); err == nil {
		t.Fatal("user2's session is still open after kick")
	}
	waitUntil(t, func() bool {
		n := 0
		for _, e := range g.events(t) {
			if e["event"] == "session_end" && e["reason"] == "kicked" {
				n++
			}
		}
		return n == 2
	})
	waitUntil(t, func() bool { // the header only
		_, out, _ := cli(t, "sessions", "--config", config)
		return strings.Count(strings.TrimSpace(out), "\n") == 0
	})
	if code, _, errOut := cli(t, "kick", "--config", config); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Errorf("kick without a target: exit %d: %s", code, errOut)
	}
}

// waitUntil polls cond for up to 5 seconds.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdminSocketIsNeverVisibleBeforeItIs0600: with a umask that lets
// everyone connect, the socket must not appear at its path with any mode
// but 0600, not even for the moment between bind and chmod (someone who
// connects then stays connected). A watcher Lstat's the path while the
// socket is bound again and again.
func TestAdminSocketIsNeverVisibleBeforeItIs0600(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "admin.sock")
	stop := make(chan struct{})
	seen := make(chan os.FileMode, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm() != 0o600 {
				seen <- fi.Mode()
				return
			}
		}
	}()
	for range 300 {
		ln, err := listenAdmin(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("bound socket: %v, mode %v; want 0600", err, fi.Mode())
		}
		ln.Close()
	}
	close(stop)
	if mode, ok := <-seen; ok {
		t.Fatalf("the socket was visible at its path with mode %v", mode)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestAdminSocketReplacesAStaleOneAndRefusesALiveOne: a socket file left
// by a serve that died is replaced; one another serve answers on is not;
// a path that is no socket is not overwritten.
func TestAdminSocketReplacesAStaleOneAndRefusesALiveOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // the file stays, nothing answers
	ln, err := listenAdmin(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer ln.Close()
	if _, err := listenAdmin(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("over a live socket: %v, want in use", err)
	}
	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := listenAdmin(file); err == nil {
		t.Errorf("over a regular file: no error")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("the regular file was overwritten")
	}
}

// blockingStore is an app password store whose list waits for release,
// and which records a use after close.
type blockingStore struct {
	noStore
	entered, release chan struct{}
	closed           chan struct{}
	usedAfterClose   chan struct{}
}

func (s *blockingStore) list(ctx context.Context, _ string) ([]credstore.AppPassword, error) {
	close(s.entered)
	<-s.release
	select {
	case <-s.closed:
		close(s.usedAfterClose)
	default:
	}
	return nil, errors.New("released")
}

// TestServeAdminAnswersEveryRequestBeforeItReturns: a request in flight
// when serve stops is answered before serveAdmin returns, so serve closes
// the store only after the last request is done with it.
func TestServeAdminAnswersEveryRequestBeforeItReturns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := listenAdmin(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	store := &blockingStore{entered: make(chan struct{}), release: make(chan struct{}), closed: make(chan struct{}), usedAfterClose: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() {
		serveAdmin(ctx, ln, store, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(store.closed) // as serve's deferred store.Close
		close(returned)
	}()
	answered := make(chan error, 1)
	go func() {
		_, err := socketAppPasswords{path: path}.list(context.Background(), "")
		answered <- err
	}()
	<-store.entered
	cancel()
	select {
	case <-returned:
		t.Error("serveAdmin returned while a request was still being answered")
	case <-time.After(200 * time.Millisecond):
	}
	close(store.release)
	<-returned
	select {
	case <-store.usedAfterClose:
		t.Error("the request used the store after it was closed")
	default:
	}
	if err := <-answered; err == nil || !strings.Contains(err.Error(), "released") {
		t.Errorf("the request in flight got %v, want its answer", err)
	}
}
