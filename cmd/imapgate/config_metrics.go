package main

// The [metrics] table: where Prometheus metrics are served.

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	// Listen is the "host:port" serving /metrics, /healthz and /readyz
	// over plain HTTP.
	// Default: "" (no metrics listener).
	Listen string `toml:"listen"`
	// Pprof also serves Go's profiles (net/http/pprof) under
	// /debug/pprof/ on that listener: CPU, heap, goroutines and
	// runtime/trace, for finding where a busy proxy's time goes.
	// Default: false (no /debug/pprof/; it needs Listen).
	Pprof bool `toml:"pprof"`
}

func (d *decoder) metrics(t *table, m *MetricsConfig) {
	t.str("listen", &m.Listen)
	t.boolean("pprof", &m.Pprof)
	t.done()
	if m.Pprof && m.Listen == "" {
		t.problem("pprof", "needs metrics.listen: profiles are served on the metrics listener")
	}
	if m.Listen != "" {
		if err := checkHostPort(m.Listen, "127.0.0.1:9143", true); err != nil {
			t.problem("listen", "%s", err)
		}
	}
}
