package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The floor of a login's CPU: `imapbench handshake-server` (a bare TLS
// server with imapgate's server configuration and the same certificate)
// in its own process, whose CPU time per handshake is what no proxy that
// terminates TLS can go below.

// handshakeServer is the running floor server.
type handshakeServer struct {
	addr string
	proc *child
}

func startHandshakeServer(ctx context.Context, dir, certFile, keyFile string, tlsConf *tls.Config) (*handshakeServer, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("the handshake server is this executable, which cannot be found: %w", err)
	}
	for range startTries {
		h := &handshakeServer{}
		if h.addr, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		if h.proc, err = startChild("imapbench handshake-server", dir, filepath.Join(dir, "handshake-server.log"),
			bin, "handshake-server", "--addr", h.addr, "--cert", certFile, "--key", keyFile); err != nil {
			return nil, err
		}
		if err = h.waitReady(ctx, tlsConf); err == nil {
			return h, nil
		}
		h.proc.stop()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (h *handshakeServer) waitReady(ctx context.Context, tlsConf *tls.Config) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := bareHandshake(ctx, h.addr, tlsConf)
		if err == nil {
			return nil
		}
		select {
		case <-h.proc.exited:
			return fmt.Errorf("imapbench handshake-server exited: %s", h.proc.tail())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("imapbench handshake-server did not answer on %s within %v: %v", h.addr, readyTimeout, err)
		}
	}
}

func (h *handshakeServer) stop() error {
	if h == nil || h.proc == nil {
		return nil
	}
	err := h.proc.stop()
	h.proc = nil
	return err
}

// bareHandshake connects, completes a TLS handshake and reads the
// server's one byte (and with it the session ticket).
func bareHandshake(ctx context.Context, addr string, conf *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("after the handshake: %w", err)
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

// floorRun is what measureFloor measured.
type floorRun struct {
	Handshakes, Resumed int
	CPU                 time.Duration
	Curve               tls.CurveID
}

// floorLoop is the state shared by the client loops of one measureFloor.
type floorLoop struct {
	addr            string
	conf            *tls.Config
	deadline        time.Time
	handshakes, res atomic.Int64
	curve           atomic.Uint32
	errOnce         sync.Once
	err             error // the first error, once the loops are done
}

// measureFloor runs workers loops of bare handshakes for d (at most
// defaultMaxLogins in all), the client's session cache shared by them if
// resume is set, and reads the server's CPU time before and after.
func (h *handshakeServer) measureFloor(ctx context.Context, conf *tls.Config, resume bool, workers int, d time.Duration) (floorRun, error) {
	conf = conf.Clone()
	conf.ClientSessionCache = nil
	if resume {
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(max(64, 4*workers))
	}
	before, err := readProcCPU("/proc", []int{h.proc.pid()})
	if err != nil {
		return floorRun{}, err
	}
	l := &floorLoop{addr: h.addr, conf: conf, deadline: time.Now().Add(d)}
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go l.handshakeLoop(ctx, &wg)
	}
	wg.Wait()
	after, err := readProcCPU("/proc", []int{h.proc.pid()})
	if err != nil {
		return floorRun{}, err
	}
	r := floorRun{Handshakes: int(l.handshakes.Load()), Resumed: int(l.res.Load()), CPU: after - before, Curve: tls.CurveID(l.curve.Load())}
	if l.err != nil {
		return r, fmt.Errorf("bare handshake: %w", l.err)
	}
	return r, nil
}

// handshakeLoop repeats bare handshakes until the deadline, the bound,
// an error or ctx's end.
func (l *floorLoop) handshakeLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil && time.Now().Before(l.deadline) && l.handshakes.Load() < defaultMaxLogins {
		st, err := bareHandshake(ctx, l.addr, l.conf)
		if err != nil {
			l.errOnce.Do(func() { l.err = err })
			return
		}
		l.handshakes.Add(1)
		l.curve.Store(uint32(st.CurveID))
		if st.DidResume {
			l.res.Add(1)
		}
	}
}
