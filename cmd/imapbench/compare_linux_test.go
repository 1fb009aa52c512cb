package main

import (
	"os"
	"testing"
)

func TestParseStatCountsFieldsAfterTheCommand(t *testing.T) {
	line := "4242 (nginx: worker (x) y) S 4240 4240 4240 0 -1 4194624 300 0 0 0 1 2 0 0 20 0 1 0 987654 10000000 500 18446744073709551615\n"
	pid, ppid, start, ok := parseStat(line)
	if !ok || pid != 4242 || ppid != 4240 || start != 987654 {
		t.Errorf("parseStat = %d, %d, %d, %v; want 4242, 4240, 987654, true", pid, ppid, start, ok)
	}
	for _, bad := range []string{"", "4242 nginx S 1", "x (a) S 1 2 3", "4242 (a) S 1 2"} {
		if _, _, _, ok := parseStat(bad); ok {
			t.Errorf("parseStat(%q) is ok", bad)
		}
	}
	me, err := childProcs("/proc", os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	if !containsPID(me, os.Getpid()) {
		t.Errorf("childProcs(parent) = %v, lacks this process %d", me, os.Getpid())
	}
}

func containsPID(ps []procID, pid int) bool {
	for _, p := range ps {
		if p.PID == pid {
			return p.alive("/proc")
		}
	}
	return false
}
