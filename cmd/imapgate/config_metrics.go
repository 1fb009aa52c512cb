package main

// The [metrics] table: where Prometheus metrics are served.

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	// Listen is the "host:port" serving /metrics, /healthz and /readyz
	// over plain HTTP.
	// Default: "" (no metrics listener).
	Listen string `toml:"listen"`
}

func (d *decoder) metrics(t *table, m *MetricsConfig) {
	t.str("listen", &m.Listen)
	t.done()
	if m.Listen != "" {
		if err := checkHostPort(m.Listen, "127.0.0.1:9143", true); err != nil {
			t.problem("listen", "%s", err)
		}
	}
}
