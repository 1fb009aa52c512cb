package proxytest

import (
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
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if i < 0 || len(f) < 2 {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	var out []int
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
