package main

import (
	"net/http"
	"os"
	"testing"
	"time"
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

func TestProcCPUIsUserPlusSystemTicks(t *testing.T) {
	// utime 1234 and stime 566 clock ticks: 18 s.
	line := "4242 (nginx: worker (x) y) S 4240 4240 4240 0 -1 4194624 300 0 0 0 1234 566 0 0 20 0 1 0 987654 10000000 500 18446744073709551615\n"
	if got, ok := parseStatCPU(line); !ok || got != 1800 {
		t.Errorf("parseStatCPU = %d, %v; want 1800, true", got, ok)
	}
	for _, bad := range []string{"", "4242 (a) S 1 2", "4242 (a) S 1 2 3 4 5 6 7 8 9 x 1"} {
		if _, ok := parseStatCPU(bad); ok {
			t.Errorf("parseStatCPU(%q) is ok", bad)
		}
	}
	before, err := readProcCPU("/proc", []int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		spin := time.Now()
		for time.Since(spin) < 50*time.Millisecond {
		}
		after, err := readProcCPU("/proc", []int{os.Getpid()})
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			return
		}
	}
	t.Error("this process spun for 5 s and its CPU time did not grow")
}

// nginx's auth_http responder runs in its own process, so that its CPU
// counts with nginx's: it sends every login to its upstream and counts
// the requests, and keeps the count once stopped.
func TestAuthResponderSendsEveryLoginToItsUpstreamFromItsOwnProcess(t *testing.T) {
	ctx := testContext(t)
	a, err := startAuthResponder(ctx, t.TempDir(), "127.0.0.1:10143")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if _, err := readProcCPU("/proc", []int{a.pid()}); a.pid() == os.Getpid() || err != nil {
		t.Fatalf("auth-http pid %d (%v): want a live process of its own", a.pid(), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+"/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Auth-Method", "plain")
	req.Header.Set("Auth-User", "user1")
	req.Header.Set("Auth-Protocol", "imap")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := [3]string{resp.Header.Get("Auth-Status"), resp.Header.Get("Auth-Server"), resp.Header.Get("Auth-Port")}; got != [3]string{"OK", "127.0.0.1", "10143"} {
		t.Errorf("Auth-Status, Auth-Server, Auth-Port = %q", got)
	}
	if n := a.requests(); n != 1 {
		t.Errorf("requests() = %d, want 1", n)
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	if n := a.requests(); n != 1 {
		t.Errorf("requests() after close = %d, want 1 still", n)
	}
}
