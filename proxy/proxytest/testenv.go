package proxytest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// FreePort returns a loopback address, "127.0.0.1:N", whose port was free
// a moment ago (it listens on port 0 and closes). Another process can take
// it before it is used; StartDovecot retries when that happens.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePorts returns n distinct free loopback addresses: every probe
// listener stays open until all n are chosen, so (unlike n calls of
// FreePort, which may hand out a port just closed again) no two are the
// same.
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := listenFree()
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// listenFree listens on a free loopback port drawn at random below Linux's
// ephemeral range (32768-60999). Port 0 would let the kernel choose, and
// it hands a port just closed to the next caller again: two helpers that
// each pick "free" ports then collide (seen as "address already used" in
// a generated config), and ports in the ephemeral range also collide with
// the source ports of the tests' own outgoing connections.
func listenFree() (net.Listener, error) {
	var last error
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 10000+rand.N(22768)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("proxytest: no free loopback port: %w", last)
}

func freePort() (string, error) {
	ln, err := listenFree()
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// RequireTool skips the test when the named program is not on PATH, or
// fails it when CI=true (.ci/run installs every tool the tests use).
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		missing(t, fmt.Sprintf("%s not installed: run .ci/run (it installs the tools the tests use)", name))
	}
}

// missing skips the test, or fails it on CI where nothing may be missing.
func missing(t testing.TB, msg string) {
	t.Helper()
	if onCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func onCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// makeDir creates the instance directory. Unix socket paths under it
// must stay short (108 bytes), and every Dovecot process, whatever its
// user, must reach them, so it is a short, world-traversable path.
func makeDir() (string, error) {
	base := os.TempDir()
	if len(base) > 40 || strings.ContainsAny(base, " \t\"'<>#\\") {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "dovecot-")
	if err != nil {
		return "", fmt.Errorf("proxytest: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("proxytest: %w", err)
	}
	return dir, nil
}

func removeDir(dir string) error {
	// Dovecot's last children may still be closing their files.
	var err error
	for range 20 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("proxytest: removing %s: %w", dir, err)
}

func writeFile(name string, data []byte, mode os.FileMode, uid, gid int) error {
	if err := os.WriteFile(name, data, mode); err != nil {
		return fmt.Errorf("proxytest: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(name, uid, gid); err != nil {
			return fmt.Errorf("proxytest: %w", err)
		}
	}
	return nil
}
