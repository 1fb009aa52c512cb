package route

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HTTP asks an auth service the way nginx's mail proxy does
// (ngx_mail_auth_http_module): a GET to URL with the login in request
// headers, the answer in response headers, the body ignored. So an nginx
// mail site's auth service drops in unchanged:
//
//	Auth-Method: plain             ("external" for an app-password login)
//	Auth-User: alice@example.org   (escaped as nginx does: %XX for space, % and controls)
//	Auth-Pass: ...                 (only with SendPassword)
//	Auth-Protocol: imap
//	Auth-Login-Attempt: 1
//	Client-IP: 192.0.2.42
//	Auth-SSL: on                   (when the client connection is TLS)
//
// Answers: "Auth-Status: OK" with Auth-Server (an address or host, or an
// upstream's name) and Auth-Port; any other Auth-Status refuses the login
// (a *RefusedError, with Auth-Wait seconds). Auth-User and Auth-Pass in
// an answer are ignored: the upstream gets the name as typed. Anything
// else (no Auth-Status, a status other than 2xx, a timeout) is an error.
type HTTP struct {
	// URL is the service. Required.
	URL string
	// SendPassword sends the client's password as Auth-Pass (the query
	// carries it only then; see proxy.Router.SendPassword).
	SendPassword bool
	// Header is sent with every request (nginx's auth_http_header), e.g.
	// a shared secret. Nil: none.
	Header http.Header
	// Client makes the requests. Nil means a client with Timeout.
	Client *http.Client
	// Timeout bounds one request. Zero means 5s.
	Timeout time.Duration
}

// ReservedHeader reports whether name is a request header HTTP sets
// itself.
func ReservedHeader(name string) bool {
	return slices.Contains(reservedHeaders, textproto.CanonicalMIMEHeaderKey(name))
}

var reservedHeaders = []string{"Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol", "Auth-Login-Attempt", "Client-Ip", "Client-Host", "Auth-Ssl", "Host"}

// maxWait caps an Auth-Wait.
const maxWait = 60 * time.Second

// Lookup asks the service about q.
func (h *HTTP) Lookup(ctx context.Context, q Query) (Answer, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return Answer{}, fmt.Errorf("auth_http: %w", err)
	}
	for k, vs := range h.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Auth-Method", cmp.Or(q.Method, "plain"))
	req.Header.Set("Auth-User", escape(q.User))
	if h.SendPassword && q.Password != "" {
		req.Header.Set("Auth-Pass", escape(q.Password))
	}
	req.Header.Set("Auth-Protocol", "imap")
	req.Header.Set("Auth-Login-Attempt", strconv.Itoa(max(q.Attempt, 1)))
	if q.ClientIP.IsValid() {
		req.Header.Set("Client-IP", q.ClientIP.Unmap().String())
	}
	if q.Secure {
		req.Header.Set("Auth-SSL", "on")
	}
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("auth_http: %w", redact(err, q.Password))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return Answer{}, fmt.Errorf("auth_http: %s answered HTTP %d", h.URL, resp.StatusCode)
	}
	status := resp.Header.Get("Auth-Status")
	switch {
	case status == "":
		return Answer{}, fmt.Errorf("auth_http: %s answered without Auth-Status", h.URL)
	case status != "OK":
		e := &RefusedError{Status: status}
		if w := resp.Header.Get("Auth-Wait"); w != "" {
			if n, err := strconv.Atoi(w); err == nil && n > 0 {
				e.Wait = min(time.Duration(n)*time.Second, maxWait)
			}
		}
		return Answer{Source: "auth_http"}, e
	}
	server := strings.TrimSpace(resp.Header.Get("Auth-Server"))
	if server == "" {
		return Answer{}, fmt.Errorf("auth_http: %s answered OK without Auth-Server", h.URL)
	}
	if port := strings.TrimSpace(resp.Header.Get("Auth-Port")); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Answer{}, fmt.Errorf("auth_http: %s answered Auth-Port %q", h.URL, port)
		}
		server = net.JoinHostPort(strings.Trim(server, "[]"), port)
	}
	return Answer{Server: server, Source: "auth_http"}, nil
}

// escape writes s as nginx writes Auth-User and Auth-Pass: %XX for space,
// "%", control characters and bytes above 0x7e, so a service decodes it
// with its usual URL decoder.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// redact removes the password from an error's text, should a transport
// ever echo a header.
func redact(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), password, "[password]"))
}
