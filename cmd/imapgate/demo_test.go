package main

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestDemoCurlCommandWorksWhenPasted runs the demo, takes the curl line it
// prints and runs it through a shell, exactly as a user pasting it would.
func TestDemoCurlCommandWorksWhenPasted(t *testing.T) {
	proxytest.RequireTool(t, "curl")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- demo(ctx, demoOptions{ImplicitAddr: "127.0.0.1:0", StartTLSAddr: "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	var curl string
	var audit []string
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(10 * time.Second)
	for curl == "" {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "curl ") {
				curl = l
			}
		case <-timeout:
			t.Fatal("the demo printed no curl command")
		}
	}
	out, err := exec.Command("sh", "-c", curl).CombinedOutput()
	if err != nil {
		t.Fatalf("pasted curl failed: %v: %s", err, out)
	}
	for _, want := range []string{"Welcome to imapgate", "Why LOGIN is refused", "IDLE works untouched"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("curl output lacks %q: %s", want, out)
		}
	}
	// The audit events of that session follow on stdout.
	for len(audit) < 3 {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "{") {
				audit = append(audit, l)
			}
		case <-timeout:
			t.Fatalf("audit events: %q", audit)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	if strings.Contains(strings.Join(audit, "\n"), demoPassword) {
		t.Fatal("the demo's audit events contain the password")
	}
}
