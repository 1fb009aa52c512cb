package oauth

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Defaults for the requests to the identity provider.
const (
	// DefaultRequestTimeout bounds one request (discovery, keys,
	// introspection), connection and TLS handshake included.
	DefaultRequestTimeout = 10 * time.Second
	// MaxResponseSize caps a response body from the provider; a larger one
	// is an error, so a broken or hostile endpoint cannot make imapgate
	// buffer without bound. Real discovery documents and key sets are a
	// few KiB.
	MaxResponseSize = 1 << 20
)

var errResponseTooLarge = fmt.Errorf("response over %d bytes", MaxResponseSize)

// newHTTPClient returns the client the validator uses: base (or a fresh
// one) with a timeout, no redirects and a response-size cap. Redirects are
// never followed: a redirected introspection POST would send the token to
// wherever the redirect points.
func newHTTPClient(base *http.Client, timeout time.Duration) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	}
	if c.Timeout == 0 {
		c.Timeout = timeout
	}
	rt := c.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSHandshakeTimeout = timeout
		t.ResponseHeaderTimeout = timeout
		t.MaxIdleConnsPerHost = 4
		rt = t
	}
	c.Transport = limitTransport{base: rt}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Jar = nil
	return &c
}

// limitTransport caps every response body at MaxResponseSize, also for
// the requests go-oidc's discovery makes with this client.
type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > MaxResponseSize {
		resp.Body.Close()
		return nil, errResponseTooLarge
	}
	resp.Body = &limitBody{rc: resp.Body, left: MaxResponseSize}
	return resp, nil
}

type limitBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// readBody reads a response body already capped by limitTransport.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// checkURL refuses a provider URL the token or the keys could be
// intercepted on: only https, or http to a loopback address (a provider
// running beside imapgate, and tests).
func checkURL(what, raw string) error {
	name := strconv.Quote(raw)
	if what != "" {
		name = what + " " + name
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s is not a URL: %w", name, err)
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("%s has no host", name)
	case u.User != nil:
		return fmt.Errorf("%s must not carry credentials", name)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("%s uses http to a host that is not loopback: use https", name)
	}
	return fmt.Errorf("%s is not an https URL", name)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// get fetches url and returns its body; any failure wraps ErrUnavailable.
func (v *Validator) get(ctx context.Context, what, rawURL string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	body, err := readBody(resp)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s answered %s", ErrUnavailable, what, rawURL, resp.Status)
	}
	return body, nil
}
