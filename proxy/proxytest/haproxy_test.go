package proxytest

import (
	"bufio"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestHAProxyHandsDovecotTheClientAddress: a client at 127.0.0.9 logs in
// through HAProxy (send-proxy-v2) to Dovecot's haproxy listener, and
// Dovecot logs 127.0.0.9 as rip, not HAProxy's 127.0.0.1. That listener
// takes nothing but a PROXY header first: a client that skips HAProxy
// gets no greeting. Close stops the haproxy process it started.
func TestHAProxyHandsDovecotTheClientAddress(t *testing.T) {
	d := StartDovecot(t, DovecotOptions{HAProxyTrustedNetworks: "127.0.0.1/32"})
	h := StartHAProxy(t, HAProxyOptions{Backend: d.HAProxyAddr, SendProxyV2: true})

	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	c, err := dialer.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := backendScript(c, bufio.NewReader(c), []string{"l LOGIN user1 " + quoteArg(d.Users["user1"]), "z LOGOUT"}); err != nil {
		t.Fatal(err)
	}
	d.WaitLog(t, "Login: user=<user1>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1")
	h.WaitLog(t, "\n127.0.0.9:")

	if err := greets(d.HAProxyAddr, nil); err == nil {
		t.Error("Dovecot's haproxy listener greeted a client that sent no PROXY header")
	}

	pid := h.PID
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if p, _ := os.FindProcess(pid); p.Signal(syscall.Signal(0)) == nil {
		t.Errorf("haproxy (pid %d) still runs after Close", pid)
	}
	if _, err := os.Stat(h.Dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there after Close: %v", h.Dir, err)
	}
}
