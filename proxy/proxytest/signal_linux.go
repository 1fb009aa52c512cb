package proxytest

import (
	"strings"
	"syscall"
	"testing"
)

// Process names of a Dovecot 2.3 with verbose_proctitle = no (its
// command lines read "dovecot-proxytest/NAME"), as Signal and Processes
// take them.
const (
	ProcMaster = "dovecot"    // the master: forks the rest, owns the listeners
	ProcLogin  = "imap-login" // greets, runs the pre-login phase, proxies TLS
	ProcAuth   = "auth"       // judges credentials for imap-login
	ProcIMAP   = "imap"       // one per logged-in session
	ProcAll    = ""           // every process of this Dovecot, master included
)

// Processes returns the PIDs of this Dovecot's processes (the master and
// its descendants) called name (one of the Proc names); ProcAll ("")
// returns them all. Tests stop, starve or
// kill a part of Dovecot with them; see Signal.
func (d *Dovecot) Processes(name string) []int {
	var pids []int
	for _, p := range processesUnder(d.PID) {
		if name == ProcAll || strings.HasSuffix(p.cmd, "/"+name) || p.pid == d.PID && name == ProcMaster {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// Signal sends sig to every process Processes(name) lists and returns
// their PIDs; it fails the test when there is none. A SIGSTOP is undone
// by a SIGCONT at the end of the test (registered before Dovecot's own
// cleanup runs, so a stopped Dovecot still stops when asked), or earlier
// by the test's own Signal(SIGCONT).
func (d *Dovecot) Signal(t testing.TB, sig syscall.Signal, name string) []int {
	t.Helper()
	pids := d.Processes(name)
	if len(pids) == 0 {
		t.Fatalf("proxytest: no Dovecot process %q to send %v to:\n%s", name, sig, d.diagnostics())
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatalf("proxytest: kill -%d %d (%s): %v", sig, pid, name, err)
		}
	}
	if sig == syscall.SIGSTOP {
		t.Cleanup(func() {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGCONT)
			}
		})
	}
	return pids
}
