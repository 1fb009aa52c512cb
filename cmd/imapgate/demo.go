package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/tlsconf"
)

// Demo credentials: the demo binds to 127.0.0.1 only.
const (
	demoUser     = "demo"
	demoPassword = "demo-password"
)

// demoOptions lets tests pick ports; zero values use the defaults.
type demoOptions struct {
	ImplicitAddr string // default 127.0.0.1:9993, or a free port if taken
	StartTLSAddr string // default 127.0.0.1:9143, or a free port if taken
	ready        func(d *demoInfo)
}

// demoInfo is what the demo prints.
type demoInfo struct {
	Implicit, StartTLS string
	CAFile             string
	Curl               string
}

// demo runs an in-memory upstream and the proxy in front of it until ctx
// is done, and prints how to try it.
func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	up, err := memupstream.Start(map[string]string{demoUser: demoPassword})
	if err != nil {
		return err
	}
	defer up.Close()
	for i, m := range demoMessages {
		msg := fmt.Sprintf("From: %s\r\nTo: demo@imapgate.test\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@imapgate.test>\r\n\r\n%s\r\n",
			m.from, m.subject, time.Now().Add(time.Duration(i-len(demoMessages))*time.Hour).Format(time.RFC1123Z), i+1, m.body)
		if err := up.AddMessage(demoUser, "INBOX", []byte(msg)); err != nil {
			return err
		}
	}

	dir, err := os.MkdirTemp("", "imapgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cert, certPEM, err := tlsconf.SelfSigned(24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		return err
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		return err
	}
	store.Add(cert)

	implicit, err := listenOrFree(o.ImplicitAddr, "127.0.0.1:9993")
	if err != nil {
		return err
	}
	starttls, err := listenOrFree(o.StartTLSAddr, "127.0.0.1:9143")
	if err != nil {
		implicit.Close()
		return err
	}
	srv := proxy.NewServer(&proxy.Config{
		Upstream: &proxy.Upstream{Address: up.Addr, TLS: proxy.UpstreamPlaintext},
		Audit:    proxy.NewAuditor(stdout, log),
		Log:      log,
	})
	tlsCfg := tlsconf.ServerConfig(store, 0)
	done := make(chan struct{}, 2)
	for _, l := range []struct {
		ln   net.Listener
		mode proxy.TLSMode
	}{{implicit, proxy.TLSImplicit}, {starttls, proxy.TLSStartTLS}} {
		go func(ln net.Listener, mode proxy.TLSMode) {
			defer func() { done <- struct{}{} }()
			if err := srv.Serve(ln, proxy.Listener{Name: ln.Addr().String(), Mode: mode, TLSConfig: tlsCfg}); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				log.Error("listener stopped", "err", err)
			}
		}(l.ln, l.mode)
	}

	info := &demoInfo{Implicit: implicit.Addr().String(), StartTLS: starttls.Addr().String(), CAFile: caFile}
	info.Curl = fmt.Sprintf(`curl --cacert %s --login-options AUTH=PLAIN -u %s:%s -sS -X 'FETCH 1:* ENVELOPE' imaps://%s/INBOX`,
		caFile, demoUser, demoPassword, info.Implicit)
	fmt.Fprintf(stdout, `imapgate demo: an in-memory IMAP server behind the proxy, on this machine only.

  implicit TLS  %s   (like port 993)
  STARTTLS      %s   (like port 143)
  user          %s
  password      %s
  CA file       %s   (the proxy's throwaway self-signed certificate)

List the demo INBOX through the proxy:

%s

Plaintext LOGIN is refused: before TLS with NO [PRIVACYREQUIRED], after TLS
with NO [CANNOT]; clients are told to use AUTHENTICATE PLAIN over TLS.

Audit events follow below, one JSON object per line. Ctrl-C stops the demo.

`, info.Implicit, info.StartTLS, demoUser, demoPassword, caFile, info.Curl)
	if o.ready != nil {
		o.ready(info)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	<-done
	<-done
	return nil
}

// listenOrFree binds addr if given, else def, else a free port on 127.0.0.1.
func listenOrFree(addr, def string) (net.Listener, error) {
	if addr != "" {
		return net.Listen("tcp", addr)
	}
	if ln, err := net.Listen("tcp", def); err == nil {
		return ln, nil
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

var demoMessages = []struct{ from, subject, body string }{
	{"Ada <ada@imapgate.test>", "Welcome to imapgate", "This message came through the proxy. The upstream never saw a plaintext password from the network."},
	{"Security Team <security@imapgate.test>", "Why LOGIN is refused", "Clients must use AUTHENTICATE over TLS. LOGIN gets NO [PRIVACYREQUIRED] before TLS and is disabled after it."},
	{"Ops <ops@imapgate.test>", "IDLE works untouched", "After login imapgate relays bytes, so IDLE, CONDSTORE, QRESYNC and MOVE pass through."},
}
