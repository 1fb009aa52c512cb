package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// auditQueueLines bounds the audit lines waiting for the writer. At about
// 300 bytes a line that is under 3 MiB; a writer that is gone for longer
// than the queue lasts costs dropped events (counted), never a session.
const auditQueueLines = 8192

// auditQueue is the audit sink behind proxy.Auditor: Write copies one JSON
// line into a bounded queue and returns at once, and one goroutine writes
// the queue to stdout, stderr or a file. A full queue (a stuck or failing
// writer) drops the line, counts it, and says so on the operational log at
// most once per reportEvery; a session never waits for the disk.
type auditQueue struct {
	lines chan []byte
	log   *slog.Logger

	mu     sync.Mutex
	output string // "stdout", "stderr" or a path
	reopen chan string
	done   chan struct{}
	closed bool

	dropped     atomic.Uint64 // lines lost: queue full or write failed
	lastReport  atomic.Int64  // unix nanos of the last drop report
	reportEvery time.Duration
}

// newAuditQueue opens output and starts the writer. It fails only when a
// file cannot be opened.
func newAuditQueue(output string, log *slog.Logger) (*auditQueue, error) {
	w, c, err := auditSink(output)
	if err != nil {
		return nil, err
	}
	q := &auditQueue{
		lines:       make(chan []byte, auditQueueLines),
		log:         log,
		output:      output,
		reopen:      make(chan string, 1),
		done:        make(chan struct{}),
		reportEvery: 10 * time.Second,
	}
	go q.writeLoop(w, c)
	return q, nil
}

// Write queues one line (the Auditor writes whole lines). It never blocks.
func (q *auditQueue) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	select {
	case q.lines <- line:
	default:
		q.drop(1, "audit queue full: the audit output is not keeping up", nil)
	}
	return len(p), nil
}

// Dropped returns how many lines were lost so far.
func (q *auditQueue) Dropped() uint64 { return q.dropped.Load() }

// drop counts lost lines and reports them, rate limited.
func (q *auditQueue) drop(lines int, msg string, err error) {
	n := q.dropped.Add(uint64(lines))
	now := time.Now().UnixNano()
	last := q.lastReport.Load()
	if now-last < int64(q.reportEvery) || !q.lastReport.CompareAndSwap(last, now) {
		return
	}
	args := []any{"output", q.currentOutput(), "dropped_total", n}
	if err != nil {
		args = append(args, "err", err)
	}
	q.log.Error("audit: "+msg+"; events dropped", args...)
}

func (q *auditQueue) currentOutput() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.output
}

// Reopen asks the writer to open output afresh (SIGHUP: logrotate moved
// the file, or the config names another output). It does not wait: a
// writer stuck in a write picks the request up when the write returns.
func (q *auditQueue) Reopen(output string) error {
	// Fail early and visibly when the new file cannot be opened; the
	// writer opens it again itself.
	if err := checkAuditOutput(output); err != nil {
		return err
	}
	q.mu.Lock()
	q.output = output
	q.mu.Unlock()
	select {
	case <-q.reopen: // an older request not taken yet: replace it
	default:
	}
	q.reopen <- output
	return nil
}

// Close writes what is queued, waiting at most timeout for the output,
// then closes it.
func (q *auditQueue) Close(timeout time.Duration) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	deadline := time.After(timeout)
	select {
	case q.lines <- nil: // the end marker; a nil line is never queued by Write
	case <-deadline:
		q.log.Error("audit: output did not take the last events before shutdown", "output", q.currentOutput())
		return
	}
	select {
	case <-q.done:
	case <-deadline:
		q.log.Error("audit: output did not take the last events before shutdown", "output", q.currentOutput())
	}
}

// writeLoop is the queue's only writer. It buffers while lines keep
// coming and flushes whenever the queue runs empty.
func (q *auditQueue) writeLoop(w io.Writer, c io.Closer) {
	defer close(q.done)
	b := auditBatch{q: q, w: w, bw: bufio.NewWriterSize(w, 64<<10)}
	closeOut := func() {
		b.flush()
		if c != nil {
			c.Close()
		}
	}
	reopen := func(out string) {
		nw, nc, err := auditSink(out)
		if err != nil {
			q.log.Error("audit: output not reopened; keeping the old one", "err", err)
			return
		}
		closeOut()
		w, c = nw, nc
		b.reset(w)
	}
	for {
		var line []byte
		select {
		case out := <-q.reopen:
			reopen(out)
			continue
		case line = <-q.lines:
		default:
			b.flush()
			select {
			case line = <-q.lines:
			case out := <-q.reopen:
				reopen(out)
				continue
			}
		}
		if line == nil {
			closeOut()
			return
		}
		b.write(line)
	}
}

// auditBatch is the writer's buffer and the number of lines in it, so that
// a failed flush (a full disk: ENOSPC) counts every line it lost, not one.
// The buffer is flushed only by flush, never from inside a write, so the
// count is exact.
type auditBatch struct {
	q    *auditQueue
	w    io.Writer
	bw   *bufio.Writer
	held int // lines in bw since the last flush
}

func (b *auditBatch) reset(w io.Writer) {
	b.w, b.held = w, 0
	b.bw.Reset(w)
}

// flush writes the buffered lines; if that fails they are all dropped.
func (b *auditBatch) flush() {
	if b.bw.Buffered() == 0 {
		return
	}
	if err := b.bw.Flush(); err != nil {
		b.q.drop(b.held, "write failed", err)
		b.bw.Reset(b.w)
	}
	b.held = 0
}

// write adds one line, flushing first when it does not fit; a line larger
// than the buffer is written on its own.
func (b *auditBatch) write(line []byte) {
	if len(line) > b.bw.Available() {
		b.flush()
	}
	if len(line) > b.bw.Available() {
		if _, err := b.w.Write(line); err != nil {
			b.q.drop(1, "write failed", err)
		}
		return
	}
	b.bw.Write(line) // fits: copied, cannot fail
	b.held++
}

// checkAuditOutput reports whether output can be opened for appending.
func checkAuditOutput(output string) error {
	_, c, err := auditSink(output)
	if c != nil {
		c.Close()
	}
	return err
}

// auditSink opens the audit output: stdout, stderr or a file (append).
func auditSink(output string) (io.Writer, io.Closer, error) {
	switch output {
	case "", auditStdout:
		return os.Stdout, nil, nil
	case auditStderr:
		return os.Stderr, nil, nil
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("audit.output: %w", err)
	}
	return f, f, nil
}
