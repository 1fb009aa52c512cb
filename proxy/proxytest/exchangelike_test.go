package proxytest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exchangeClient is a line-level client for the Exchange-like server's
// own tests.
type exchangeClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialExchange(t *testing.T, x *ExchangeLike) *exchangeClient {
	t.Helper()
	c, err := net.Dial("tcp", x.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &exchangeClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *exchangeClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads lines until one starts with prefix and returns it.
func (c *exchangeClient) expect(prefix string) string {
	c.t.Helper()
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
}

func (c *exchangeClient) startTLS(x *ExchangeLike) {
	c.t.Helper()
	c.send("s STARTTLS")
	c.expect("s OK Begin TLS negotiation now.")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(x.CertPEM)
	tc := tls.Client(c.conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

// TestExchangeLikeBehavesAsPublished walks the quirks the server claims,
// as a client sees them on the wire.
func TestExchangeLikeBehavesAsPublished(t *testing.T) {
	x := StartExchangeLike(t, ExchangeLikeOptions{RefusePlain: true, Messages: 6})
	c := dialExchange(t, x)
	if g := c.expect("* "); g != exchangeGreeting || strings.Contains(g, "CAPABILITY") {
		t.Fatalf("greeting %q", g)
	}
	c.send("a CAPABILITY")
	if caps := c.expect("* CAPABILITY"); !strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "AUTH=PLAIN") {
		t.Fatalf("before TLS: %q", caps)
	}
	c.expect("a OK CAPABILITY completed.")
	c.send(`b LOGIN "CORP\\user1" "` + x.Users["user1"] + `"`)
	c.expect("b NO LOGIN failed.")
	c.startTLS(x)
	c.send("c CAPABILITY")
	if caps := c.expect("* CAPABILITY"); !strings.Contains(caps, "AUTH=NTLM AUTH=GSSAPI AUTH=PLAIN") {
		t.Fatalf("after TLS: %q", caps)
	}
	c.expect("c OK")
	c.send("d AUTHENTICATE PLAIN")
	c.expect("+")
	c.send(base64.StdEncoding.EncodeToString([]byte("\x00CORP\\user1\x00" + x.Users["user1"])))
	c.expect("d NO AUTHENTICATE failed.")
	c.send("e LOGIN user1 " + x.Users["user1"])
	c.expect("e NO LOGIN failed.")
	c.send("f LOGIN {18}")
	c.expect("+ Ready for additional command text.")
	c.send("user1@corp.example {" + strconv.Itoa(len(x.Users["user1"])) + "}")
	c.expect("+ Ready for additional command text.")
	c.send(x.Users["user1"])
	if ok := c.expect("f "); ok != "f OK LOGIN completed." {
		t.Fatalf("login answer %q: Exchange's carries no capabilities", ok)
	}
	c.send("g SELECT INBOX")
	c.expect("* 6 EXISTS")
	c.expect("g OK")
	c.send("h FETCH 3 FLAGS")
	if f := c.expect("* 3 FETCH"); !strings.Contains(strings.ToLower(f), `\seen`) {
		t.Fatalf("message 3: %q, want \\Seen", f)
	}
	want := []ExchangeLogin{
		{"AUTHENTICATE PLAIN", `CORP\user1`, false},
		{"LOGIN", "user1", false},
		{"LOGIN", "user1@corp.example", true},
	}
	if got := x.Logins(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("logins %+v, want %+v", got, want)
	}
}
