package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// childProcAttr puts a server that compare starts in its own process
// group, so that Ctrl-C reaches imapbench alone and imapbench stops its
// servers in order, and makes the kernel send it SIGTERM should imapbench
// die without stopping it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// procID names a process across PID reuse: a PID and its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot).
type procID struct {
	PID   int
	Start uint64
}

// childProcs lists the processes whose parent is ppid, read from procRoot
// ("/proc").
func childProcs(procRoot string, ppid int) ([]procID, error) {
	stats, err := filepath.Glob(filepath.Join(procRoot, "[0-9]*", "stat"))
	if err != nil {
		return nil, err
	}
	var kids []procID
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // it exited
		}
		pid, parent, start, ok := parseStat(string(b))
		if ok && parent == ppid {
			kids = append(kids, procID{pid, start})
		}
	}
	return kids, nil
}

// parseStat reads the pid, ppid and start time of a /proc/PID/stat line:
// "pid (comm) state ppid ... starttime ...". comm may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStat(s string) (pid, ppid int, start uint64, ok bool) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, 0, 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, 0, 0, false
	}
	if ppid, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, 0, false
	}
	if start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return 0, 0, 0, false
	}
	return pid, ppid, start, true
}

// alive reports whether p still runs (and is not a zombie): its PID
// exists with the same start time.
func (p procID) alive(procRoot string) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(p.PID), "stat"))
	if err != nil {
		return false
	}
	pid, _, start, ok := parseStat(string(b))
	if !ok || pid != p.PID || start != p.Start {
		return false
	}
	end := strings.LastIndexByte(string(b), ')')
	return !strings.HasPrefix(string(b[end+1:]), " Z")
}

// kill sends SIGKILL to p if it is still the process that was found.
func (p procID) kill(procRoot string) error {
	if !p.alive(procRoot) {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %d: %w", p.PID, err)
	}
	return nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture (proc(5)).
const clockTicks = 100

// readProcCPU sums the CPU time (utime + stime, fields 14 and 15 of
// /proc/PID/stat, which count every thread of the process) of pids under
// procRoot ("/proc").
func readProcCPU(procRoot string, pids []int) (time.Duration, error) {
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
		if err != nil {
			return 0, fmt.Errorf("CPU time of %d: %w", pid, err)
		}
		t, ok := parseStatCPU(string(b))
		if !ok {
			return 0, fmt.Errorf("CPU time of %d: cannot parse its stat line", pid)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatCPU reads utime + stime, in clock ticks, of a /proc/PID/stat
// line, counting fields from the last ')' as parseStat does.
func parseStatCPU(s string) (uint64, bool) {
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, false
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return utime + stime, true
}
