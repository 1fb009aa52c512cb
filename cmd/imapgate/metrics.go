package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imapgate/imapgate/proxy"
)

// gateMetrics are the proxy's Prometheus series. Almost all are derived from
// the audit events (metrics.observe is the Auditor's observer), so the
// numbers and the audit trail cannot disagree. Label values come from the
// config (listener) or from the proxy's fixed reason vocabulary, never from
// a client, so the number of series is bounded.
type gateMetrics struct {
	reg *prometheus.Registry

	connsCurrent  *prometheus.GaugeVec
	connsTotal    *prometheus.CounterVec
	tlsTotal      *prometheus.CounterVec
	authTotal     *prometheus.CounterVec
	sessionsEnded *prometheus.CounterVec
	upstreamLogin *prometheus.HistogramVec
	upstreamUp    *prometheus.GaugeVec
	reloads       *prometheus.CounterVec

	rc  atomic.Pointer[runConfig]    // the runConfig in force: its certificates, for expiry
	srv atomic.Pointer[proxy.Server] // for the live byte counts
}

// newMetrics registers every series. dropped reports the audit lines lost
// so far (auditQueue.Dropped); it may be nil.
func newMetrics(dropped func() uint64) *gateMetrics {
	m := &gateMetrics{reg: prometheus.NewRegistry()}
	m.connsCurrent = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imapgate_connections_current", Help: "Client connections open now, by listener.",
	}, []string{"listener"})
	m.connsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_connections_total", Help: "Client connections seen, by listener and result (accepted, refused).",
	}, []string{"listener", "result"})
	m.tlsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_tls_handshakes_total", Help: "Client TLS handshakes, by result (ok, failed) and reason.",
	}, []string{"result", "reason"})
	m.authTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_auth_total", Help: "Authentication decisions, by result and reason (the audit event's fields).",
	}, []string{"result", "reason"})
	m.sessionsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_sessions_ended_total", Help: "Ended sessions, by reason.",
	}, []string{"reason"})
	m.upstreamLogin = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "imapgate_upstream_login_seconds",
		Help:    "Time to log in to the upstream (dial, TLS, login), by result (ok, failure, error).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
	m.upstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imapgate_upstream_up", Help: "1 if the last probe of the upstream address (connect, TLS, greeting, CAPABILITY, LOGOUT) succeeded, 0 if it failed; by upstream name (or address, for an unnamed [upstream]) and address.",
	}, []string{"upstream", "address"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_config_reloads_total", Help: "SIGHUP reloads, by result (ok, rejected).",
	}, []string{"result"})
	m.reg.MustRegister(m.connsCurrent, m.connsTotal, m.tlsTotal, m.authTotal, m.sessionsEnded,
		(*bytesRelayed)(m), m.upstreamLogin, m.upstreamUp, m.reloads, (*certExpiry)(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "imapgate_accept_errors_total", Help: "Failed accepts on the client listeners, retried with a back-off (out of descriptors: see the log).",
	}, func() float64 {
		if srv := m.srv.Load(); srv != nil {
			return float64(srv.AcceptErrors())
		}
		return 0
	}))
	if dropped != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "imapgate_audit_dropped_total", Help: "Audit events lost because the audit output failed or did not keep up.",
		}, func() float64 { return float64(dropped()) }))
	}
	return m
}

// observe updates the series from one audit event. It runs for every event
// on the session's goroutine: counters only.
func (m *gateMetrics) observe(e *proxy.Event) {
	switch e.Event {
	case proxy.EventConnect:
		m.connsTotal.WithLabelValues(e.Listener, e.Result).Inc()
		if e.Result == proxy.ResultAccepted {
			m.connsCurrent.WithLabelValues(e.Listener).Inc()
		}
	case proxy.EventTLS:
		m.tlsTotal.WithLabelValues(e.Result, e.Reason).Inc()
	case proxy.EventAuth:
		m.authTotal.WithLabelValues(e.Result, e.Reason).Inc()
	case proxy.EventSessionEnd:
		// session_end is written exactly for the accepted connections.
		m.connsCurrent.WithLabelValues(e.Listener).Dec()
		m.sessionsEnded.WithLabelValues(e.Reason).Inc()
	}
}

// observeLogin is proxy.Upstream.ObserveLogin.
func (m *gateMetrics) observeLogin(d time.Duration, err error) {
	result := proxy.ResultOK
	switch {
	case errors.Is(err, proxy.ErrBadCredentials):
		result = proxy.ResultFailure
	case err != nil:
		result = proxy.ResultError
	}
	m.upstreamLogin.WithLabelValues(result).Observe(d.Seconds())
}

// certExpiry exports the seconds until each certificate expires; it reads
// the store serving now, so reloaded certificates show at once.
type certExpiry gateMetrics

var certExpiryDesc = prometheus.NewDesc("imapgate_certificate_expiry_seconds",
	"Seconds until the certificate expires (negative: expired), by subject common name and first DNS name.",
	[]string{"cn", "dns_name"}, nil)

func (c *certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c *certExpiry) Collect(ch chan<- prometheus.Metric) {
	seen := map[[2]string]bool{}
	for _, leaf := range (*gateMetrics)(c).leaves() {
		name := ""
		if len(leaf.DNSNames) > 0 {
			name = leaf.DNSNames[0]
		}
		k := [2]string{leaf.Subject.CommonName, name}
		if seen[k] {
			continue // two pairs for one name (ECDSA and RSA): one series
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue,
			time.Until(leaf.NotAfter).Seconds(), k[0], k[1])
	}
}

// bytesRelayed exports proxy.Server.Bytes at each scrape: live, so the
// traffic of sessions that stay open for hours shows as it happens.
type bytesRelayed gateMetrics

var bytesDesc = prometheus.NewDesc("imapgate_bytes_total",
	"Bytes relayed, live; direction in = client to upstream, out = upstream to client.",
	[]string{"direction"}, nil)

func (b *bytesRelayed) Describe(ch chan<- *prometheus.Desc) { ch <- bytesDesc }

func (b *bytesRelayed) Collect(ch chan<- prometheus.Metric) {
	srv := b.srv.Load()
	if srv == nil {
		return
	}
	in, out := srv.Bytes()
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(in), "in")
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(out), "out")
}

// health answers /healthz and /readyz.
type health struct {
	bound  atomic.Bool                   // every listener is bound
	groups func() []*proxy.UpstreamGroup // the upstreams in force
	certs  func() []*x509.Certificate    // the certificates served now
	now    func() time.Time              // nil: time.Now
}

// readiness lists what is not ready; empty means ready.
func (h *health) readiness() []string {
	var not []string
	if !h.bound.Load() {
		not = append(not, "listeners not bound")
	}
	if len(h.certs()) == 0 {
		not = append(not, "no certificate loaded")
	}
	now := time.Now()
	if h.now != nil {
		now = h.now()
	}
	for _, g := range h.groups() {
		if g.Ready(now) {
			continue
		}
		if last := g.LastAnswer(); last.IsZero() {
			not = append(not, fmt.Sprintf("upstream %s not probed successfully yet", g.Label()))
		} else {
			not = append(not, fmt.Sprintf("upstream %s last answered a probe %s ago", g.Label(), now.Sub(last).Round(time.Second)))
		}
	}
	return not
}

// watchUpstreams probes every address of groups until ctx ends (a reload
// ends it and starts the new config's), for logins, /readyz and
// imapgate_upstream_up. The gauge is reset first: addresses a reload
// removed leave no series behind.
func (m *gateMetrics) watchUpstreams(ctx context.Context, wg *sync.WaitGroup, groups []*proxy.UpstreamGroup, log *slog.Logger) {
	m.upstreamUp.Reset()
	for _, g := range groups {
		wg.Add(1)
		go watchUpstream(ctx, wg, g, m, log)
	}
}

// watchUpstream runs g.Watch and reports each probe; a named function so
// goroutine dumps say what it is.
func watchUpstream(ctx context.Context, wg *sync.WaitGroup, g *proxy.UpstreamGroup, m *gateMetrics, log *slog.Logger) {
	defer wg.Done()
	g.Watch(ctx, func(r proxy.ProbeResult) {
		up := 1.0
		if r.Err != nil {
			up = 0
		}
		m.upstreamUp.WithLabelValues(r.Upstream, r.Address).Set(up)
		switch {
		case !r.Changed:
		case r.Err != nil:
			log.Warn("upstream probe failed", "upstream", r.Upstream, "address", r.Address, "err", r.Err)
		default:
			log.Info("upstream probe: answering again", "upstream", r.Upstream, "address", r.Address)
		}
	})
}

// metricsHandler serves /metrics, /healthz and /readyz, and with
// profiles Go's profiles under /debug/pprof/ (README [metrics]).
func metricsHandler(m *gateMetrics, h *health, profiles bool) http.Handler {
	mux := http.NewServeMux()
	if profiles {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if not := h.readiness(); len(not) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(not, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// serveMetrics runs the metrics HTTP server on ln until ctx ends.
func serveMetrics(ctx context.Context, ln net.Listener, hd http.Handler, log *slog.Logger) {
	srv := &http.Server{Handler: hd, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics listener stopped", "err", err)
	}
}

// leaves returns the certificates served now: from the files or the ACME
// manager of the config in force.
func (m *gateMetrics) leaves() []*x509.Certificate {
	rc := m.rc.Load()
	if rc == nil {
		return nil
	}
	return rc.leaves()
}
