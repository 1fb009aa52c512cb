package proxytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	type proc struct {
		pid, ppid   int
		state, name string
	}
	var procs []proc
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		ppid, _ := strconv.Atoi(f[1])
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		name := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		procs = append(procs, proc{pid, ppid, f[0], name})
	}
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if !in[p.pid] && in[p.ppid] {
				in[p.pid], changed = true, true
			}
		}
	}
	var b strings.Builder
	for _, p := range procs {
		if in[p.pid] {
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", p.pid))
			fmt.Fprintf(&b, "%7d %7d %s %-20s %s\n", p.pid, p.ppid, p.state, wchan, p.name)
		}
	}
	return b.String()
}
