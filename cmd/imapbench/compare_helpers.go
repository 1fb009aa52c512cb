package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// The helper processes of a comparison, each this executable with a
// subcommand of its own, so that their CPU time is theirs and not the
// client's: nginx's auth_http responder (auth-http), whose CPU counts
// with nginx's, and a bare TLS server (handshake-server), the floor of
// the CPU a login's handshake costs.

// authResponder is nginx's auth_http server, `imapbench auth-http` in its
// own process: it accepts every login and sends it to one upstream. A
// wrong password reaches the upstream, which refuses it.
type authResponder struct {
	addr string
	proc *child
	// last is the request count read at close, for requests afterwards.
	last int64
}

// startAuthResponder starts the responder on a fresh loopback port, its
// output in dir, and waits until it answers.
func startAuthResponder(ctx context.Context, dir, upstream string) (*authResponder, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("the auth_http responder is this executable, which cannot be found: %w", err)
	}
	for range startTries {
		a := &authResponder{}
		if a.addr, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		if a.proc, err = startChild("imapbench auth-http", dir, filepath.Join(dir, "auth-http.log"),
			bin, "auth-http", "--addr", a.addr, "--upstream", upstream); err != nil {
			return nil, err
		}
		if err = a.waitReady(ctx); err == nil {
			return a, nil
		}
		a.proc.stop()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (a *authResponder) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if _, err := a.count(ctx); err == nil {
			return nil
		}
		select {
		case <-a.proc.exited:
			return fmt.Errorf("imapbench auth-http exited: %s", a.proc.tail())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("imapbench auth-http did not answer on %s within %v", a.addr, readyTimeout)
		}
	}
}

// count asks the responder how many logins it has answered.
func (a *authResponder) count(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+"/count", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// requests is how many logins it answered; 0 if it cannot say.
func (a *authResponder) requests() int64 {
	if a == nil {
		return 0
	}
	if a.proc == nil {
		return a.last
	}
	n, _ := a.count(context.Background())
	return n
}

func (a *authResponder) pid() int { return a.proc.pid() }

// close stops it, keeping its count.
func (a *authResponder) close() error {
	if a == nil || a.proc == nil {
		return nil
	}
	a.last = a.requests()
	err := a.proc.stop()
	a.proc = nil
	return err
}

// runAuthHTTP is `imapbench auth-http --addr A --upstream U`: nginx's
// auth_http protocol (every request is answered Auth-Status: OK with
// U as Auth-Server and Auth-Port), and GET /count, the requests so far.
func runAuthHTTP(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("auth-http", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen `host:port` (loopback)")
	upstream := fs.String("upstream", "", "the IMAP server every login goes to, `host:port`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(*upstream)
	if err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var requests atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, requests.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", host)
		w.Header().Set("Auth-Port", port)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runHandshakeServer is `imapbench handshake-server --addr A --cert F
// --key K`: the floor of a login's CPU. It accepts TLS connections with
// imapgate's own server configuration (tlsconf.ServerConfig: Go's
// default key exchanges, X25519MLKEM768 first, and session tickets),
// completes the handshake, writes one byte and closes. The byte makes
// the client read the TLS 1.3 session ticket that follows the
// handshake, so that its next handshake can resume.
func runHandshakeServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("handshake-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen `host:port` (loopback)")
	certFile := fs.String("cert", "", "PEM certificate `file`")
	keyFile := fs.String("key", "", "PEM private key `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, err := tlsconf.LoadCertStore(tlsconf.CertFiles{CertFile: *certFile, KeyFile: *keyFile})
	if err != nil {
		return err
	}
	conf := tlsconf.ServerConfig(store, 0)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go serveHandshake(&wg, tls.Server(c, conf))
	}
}

func serveHandshake(wg *sync.WaitGroup, c *tls.Conn) {
	defer wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if c.Handshake() == nil {
		c.Write([]byte{'.'})
	}
}
