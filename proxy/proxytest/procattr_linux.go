package proxytest

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// sysProcAttr makes the kernel send SIGTERM to Dovecot when the test
// binary dies without running its cleanups (a panic, a -timeout), so no
// Dovecot outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// processTree lists root and its descendants with their state and what
// they wait on, for failure messages: a stuck Dovecot process shows here.
func processTree(root int) string {
	var b strings.Builder
	for _, p := range processesUnder(root) {
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", p.pid))
		fmt.Fprintf(&b, "%7d %7d %s %-20s %s\n", p.pid, p.ppid, p.state, wchan, p.cmd)
	}
	return b.String()
}
