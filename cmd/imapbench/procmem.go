package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memSample is the memory of the measured processes, summed over them.
type memSample struct {
	// RSSBytes is VmRSS from /proc/PID/status: resident memory, pages
	// shared with other processes counted in full.
	RSSBytes int64 `json:"rss_bytes"`
	// PSSBytes is Pss from /proc/PID/smaps_rollup: resident memory with
	// each shared page divided among the processes sharing it, so that
	// the Pss of nginx's master and workers add up to what they use.
	PSSBytes int64 `json:"pss_bytes"`
}

func (m memSample) max(o memSample) memSample {
	return memSample{RSSBytes: max(m.RSSBytes, o.RSSBytes), PSSBytes: max(m.PSSBytes, o.PSSBytes)}
}

// readProcMem samples the memory of pids under procRoot ("/proc") and
// sums it. Reading smaps_rollup needs ptrace access to the process: its
// user or root.
func readProcMem(procRoot string, pids []int) (memSample, error) {
	var sum memSample
	for _, pid := range pids {
		dir := filepath.Join(procRoot, strconv.Itoa(pid))
		rss, err := readProcField(filepath.Join(dir, "status"), "VmRSS")
		if err != nil {
			return memSample{}, err
		}
		pss, err := readProcField(filepath.Join(dir, "smaps_rollup"), "Pss")
		if err != nil {
			return memSample{}, err
		}
		sum.RSSBytes += rss
		sum.PSSBytes += pss
	}
	return sum, nil
}

func readProcField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsPermission(err) {
			return 0, fmt.Errorf("%w (run imapbench as the process's user or as root)", err)
		}
		return 0, err
	}
	defer f.Close()
	v, err := parseProcField(f, name)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// parseProcField finds the line "name: N kB" in a /proc file (status,
// smaps_rollup, meminfo) and returns N in bytes. The name must match the
// whole key: "Pss" is not "Pss_Anon".
func parseProcField(r io.Reader, name string) (int64, error) {
	sc := bufio.NewScanner(r)
	prefix := []byte(name + ":")
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(string(line[len(prefix):]))
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("%s: want \"N kB\", got %q", name, strings.TrimSpace(string(line[len(prefix):])))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("%s: bad number %q", name, fields[0])
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s line (a kernel thread or a zombie has none)", name)
}

// parsePIDs parses "123" or "123,456".
func parsePIDs(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var pids []int
	for _, f := range strings.Split(s, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--pid: %q is not a process id", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
