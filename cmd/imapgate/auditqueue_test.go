package main

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy"
)

// TestAuditQueueNeverBlocksOnAStuckOutput: with the output a pipe nobody
// reads, logging keeps returning at once; the lost events are counted and
// reported on the operational log.
func TestAuditQueueNeverBlocksOnAStuckOutput(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var opLog lockedBuffer
	q := &auditQueue{lines: make(chan []byte, 16), log: slog.New(slog.NewJSONHandler(&opLog, nil)), output: "pipe",
		reopen: make(chan string, 1), done: make(chan struct{}), reportEvery: 10 * time.Second}
	go q.writeLoop(w, w)
	a := proxy.NewAuditor(q, nil)
	// A pipe holds 64 KiB: far fewer events than this fill it.
	const n = 5000
	start := time.Now()
	for i := range n {
		a.Log(&proxy.Event{Event: "auth", Session: "s", ClientIP: "192.0.2.1", Result: "failure", User: strings.Repeat("u", 100+i%7)})
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d events took %v with a stuck output", n, took)
	}
	if q.Dropped() == 0 {
		t.Error("no event counted as dropped with a stuck output")
	}
	if !strings.Contains(opLog.String(), "audit queue full") || !strings.Contains(opLog.String(), "dropped_total") {
		t.Errorf("the operational log does not report the drops: %q", opLog.String())
	}
	// Unblock the writer: what it took is written, nothing more is lost.
	go func() { bufio.NewReader(r).WriteTo(&bytes.Buffer{}) }()
	q.Close(5 * time.Second)
}

// TestAuditQueueReportsWriteErrors: an output that fails (a full disk, a
// closed file) costs events, counted and reported, never an error to the
// caller.
func TestAuditQueueReportsWriteErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "a.log"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // every write now fails
	var opLog lockedBuffer
	q := &auditQueue{lines: make(chan []byte, 16), log: slog.New(slog.NewJSONHandler(&opLog, nil)), output: f.Name(),
		reopen: make(chan string, 1), done: make(chan struct{})}
	go q.writeLoop(f, nil)
	a := proxy.NewAuditor(q, nil)
	a.Log(&proxy.Event{Event: "connect", Session: "s", Result: "accepted"})
	waitFor(t, func() bool { return q.Dropped() > 0 })
	// The drop is counted before it is reported: wait for the report too.
	waitFor(t, func() bool { return strings.Contains(opLog.String(), "write failed") })
	q.Close(time.Second)
}

// TestAuditQueueReopens: after the file is moved away (logrotate),
// Reopen makes the writer create it again; nothing is lost on either side.
func TestAuditQueueReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	q, err := newAuditQueue(path, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := proxy.NewAuditor(q, nil)
	for range 100 {
		a.Log(&proxy.Event{Event: "connect", Session: "before"})
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(path); return bytes.Count(b, []byte("\n")) == 100 })
	os.Rename(path, path+".1")
	if err := q.Reopen(path); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		a.Log(&proxy.Event{Event: "connect", Session: "after"})
	}
	q.Close(5 * time.Second)
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if bytes.Count(old, []byte(`"before"`)) != 100 || bytes.Count(cur, []byte(`"after"`)) != 50 || bytes.Contains(cur, []byte("before")) {
		t.Errorf("rotated file has %d before-events, new file %d after-events", bytes.Count(old, []byte(`"before"`)), bytes.Count(cur, []byte(`"after"`)))
	}
	if err := q.Reopen(filepath.Join(dir, "no", "such", "dir.log")); err == nil {
		t.Error("Reopen of an impossible path did not fail")
	}
}
