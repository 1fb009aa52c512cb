package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// TestReadyzFollowsTheUpstreamProbes: two named upstreams, "mail" at one
// address and "pair" at two, one of which never answers. /readyz turns
// ready once every upstream has an address answering its probes (the
// dead half of "pair" does not hold it back), and unready, naming the
// upstream, when "mail" stops answering; imapgate_upstream_up has one
// series per address; /healthz stays ok throughout.
func TestReadyzFollowsTheUpstreamProbes(t *testing.T) {
	mail, err := memupstream.Start(map[string]string{"u": "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer mail.Close()
	peer, err := memupstream.Start(map[string]string{"u": "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dead := proxytest.FreePort(t)
	cert, _, _ := tlsconf.SelfSigned(time.Hour, "localhost")
	certs, _ := tlsconf.LoadCertStore()
	certs.Add(cert)
	group := func(name string, addrs ...string) *proxy.UpstreamGroup {
		g := &proxy.UpstreamGroup{Name: name, ProbeInterval: 20 * time.Millisecond}
		for _, a := range addrs {
			g.Members = append(g.Members, &proxy.Upstream{Address: a, TLS: proxy.UpstreamPlaintext, ConnectTimeout: time.Second})
		}
		return g
	}
	groups := []*proxy.UpstreamGroup{group("mail", mail.Addr), group("pair", dead, peer.Addr)}
	m := newMetrics(nil)
	h := &health{certs: certs.Leaves, groups: func() []*proxy.UpstreamGroup { return groups }}
	h.bound.Store(true)
	hd := metricsHandler(m, h, false)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "upstream mail not probed") {
		t.Fatalf("before any probe: %d %q", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var probes sync.WaitGroup
	defer func() { cancel(); probes.Wait() }()
	m.watchUpstreams(ctx, &probes, groups, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	waitFor(t, func() bool { code, _ := get("/readyz"); return code == 200 })
	waitFor(t, func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `imapgate_upstream_up{address="`+dead+`",upstream="pair"} 0`) &&
			strings.Contains(body, `imapgate_upstream_up{address="`+peer.Addr+`",upstream="pair"} 1`) &&
			strings.Contains(body, `imapgate_upstream_up{address="`+mail.Addr+`",upstream="mail"} 1`)
	})

	mail.Close()
	waitFor(t, func() bool {
		code, body := get("/readyz")
		return code == 503 && strings.Contains(body, "upstream mail last answered a probe") && !strings.Contains(body, "pair")
	})
	waitFor(t, func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `imapgate_upstream_up{address="`+mail.Addr+`",upstream="mail"} 0`)
	})
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}

	// No certificate: not ready either.
	empty, _ := tlsconf.LoadCertStore()
	h.certs = empty.Leaves
	if _, body := get("/readyz"); !strings.Contains(body, "no certificate") {
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

func TestProfilesAreServedOnlyWhenMetricsPprofIsOn(t *testing.T) {
	m := newMetrics(nil)
	h := &health{certs: func() []*x509.Certificate { return nil }, groups: func() []*proxy.UpstreamGroup { return nil }}
	for _, on := range []bool{false, true} {
		hd := metricsHandler(m, h, on)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/trace?seconds=0.05"} {
			rec := httptest.NewRecorder()
			hd.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if want := map[bool]int{false: 404, true: 200}[on]; rec.Code != want {
				t.Errorf("pprof = %v: GET %s = %d, want %d", on, path, rec.Code, want)
			}
		}
	}
}
