package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// TestReadyzFollowsTheUpstreamProbe: /readyz turns ready once the upstream
// answers a probe and unready, with the reason, when it stops answering;
// /healthz stays ok throughout.
func TestReadyzFollowsTheUpstreamProbe(t *testing.T) {
	up, err := memupstream.Start(map[string]string{"u": "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	cert, _, _ := tlsconf.SelfSigned(time.Hour, "localhost")
	certs, _ := tlsconf.LoadCertStore()
	certs.Add(cert)
	m := newMetrics(nil)
	h := &health{probeEvery: 20 * time.Millisecond, certs: certs.Leaves}
	h.bound.Store(true)
	hd := metricsHandler(m, h)
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "not probed") {
		t.Fatalf("before any probe: %d %q", code, body)
	}
	addr := up.Addr
	u := &proxy.Upstream{Address: addr, TLS: proxy.UpstreamPlaintext, ConnectTimeout: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go probeUpstream(ctx, h, func() *proxy.Upstream { return u }, m, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	waitFor(t, func() bool { code, _ := readyz(); return code == 200 })

	up.Close()
	waitFor(t, func() bool {
		code, body := readyz()
		return code == 503 && strings.Contains(body, "upstream last answered a probe")
	})
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("/healthz: %d", rec.Code)
	}
	// /readyz turns 503 once the last good probe is too old, which can be
	// while a probe is still failing; the gauge moves when it has failed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec = httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if strings.Contains(rec.Body.String(), "imapgate_upstream_up 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("imapgate_upstream_up is not 0 with the upstream gone")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// No certificate: not ready either.
	empty, _ := tlsconf.LoadCertStore()
	h.certs = empty.Leaves
	if _, body := readyz(); !strings.Contains(body, "no certificate") {
		t.Errorf("without certificates: %q", body)
	}
}

// TestMetricsListenThatCannotBindFailsTheStart: like a client listener, a
// metrics address in use is a start error with the reason, exit 1.
func TestMetricsListenThatCannotBindFailsTheStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cert, _, _ := tlsconf.SelfSigned(time.Hour, "localhost")
	certFile, keyFile, _ := tlsconf.WritePEMFiles(dir, cert)
	path := dir + "/imapgate.toml"
	write(t, path, "[[listen]]\naddress = \""+proxytest.FreePort(t)+"\"\n\n[tls]\ncert_file = \""+certFile+"\"\nkey_file = \""+keyFile+
		"\"\n\n[upstream]\naddress = \"127.0.0.1:1\"\ntls = \"none\"\n\n[metrics]\nlisten = \""+taken.Addr().String()+"\"\n")
	var stderr lockedBuffer
	if code := serve(context.Background(), path, &stderr); code != 1 || !strings.Contains(stderr.String(), "metrics.listen: cannot bind") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
