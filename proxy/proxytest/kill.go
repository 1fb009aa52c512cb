package proxytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Kill ends Dovecot the way a crash or an OOM kill does: SIGKILL to the
// master and to every process under it at once, so no process is left
// to say BYE or finish a session; the kernel closes their connections.
// (Close's SIGTERM lets the master exit before the imap processes
// serving logged-in sessions, which go on for seconds.) It waits for the
// master to exit; Close still removes Dir afterwards.
func (d *Dovecot) Kill() {
	if d.cmd == nil {
		return
	}
	for _, pid := range descendants(d.PID) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

// descendants returns the processes below root, from /proc (none where
// there is no /proc).
func descendants(root int) []int {
	var out []int
	for _, p := range processesUnder(root) {
		if p.pid != root {
			out = append(out, p.pid)
		}
	}
	return out
}

// procEntry is one process as /proc/PID/stat and cmdline describe it.
type procEntry struct {
	pid, ppid int
	state     string // R, S, D, T, Z...
	cmd       string // the command line, arguments joined by spaces
}

// processesUnder returns root and every process below it, in /proc's
// order: the one reading of /proc that Kill, Processes and the failure
// diagnostics share. None where there is no /proc.
func processesUnder(root int) []procEntry {
	var procs []procEntry
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
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
		procs = append(procs, procEntry{pid, ppid, f[0], strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))})
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
	out := procs[:0]
	for _, p := range procs {
		if in[p.pid] {
			out = append(out, p)
		}
	}
	return out
}
