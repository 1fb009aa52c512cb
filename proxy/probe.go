package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"time"
)

// observeLogin reports a finished Login to f; it is deferred by Login.
func observeLogin(f func(time.Duration, error), start time.Time, err *error) {
	f(time.Since(start), *err)
}

// Probe checks that the upstream answers as Login would find it: it dials,
// runs TLS (implicit or STARTTLS, with the same verification), reads the
// greeting and logs out, without any credential. Health checks call it
// every few seconds; it costs one connection and no login.
func (u *Upstream) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.connectTimeout())
	defer cancel()
	conn, err := u.dial(ctx)
	if err != nil {
		return fmt.Errorf("%w: dial %s: %w", ErrUnavailable, u.Address, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if u.Forward == ForwardProxyV2 {
		// A PROXY v2 LOCAL header: the upstream expects a header, and this
		// connection speaks for nobody.
		if _, err := conn.Write(proxyV2Header(ClientInfo{})); err != nil {
			return unavailable("write PROXY header", err)
		}
	}
	if u.TLS == UpstreamImplicit {
		tc := tls.Client(conn, u.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return unavailable("TLS handshake", err)
		}
		conn = tc
	}
	c := &upstreamClient{conn: conn, r: bufio.NewReaderSize(conn, 1024), w: bufio.NewWriterSize(conn, 256)}
	if err := c.greeting(); err != nil {
		return err
	}
	if u.TLS == UpstreamSTARTTLS || u.TLS == "" {
		if err := c.startTLS(ctx, u.tlsConfig()); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return unavailable("probe", err)
	}
	// A polite LOGOUT; its answer does not matter.
	c.w.WriteString("p LOGOUT\r\n")
	c.w.Flush()
	return nil
}
