package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// upstreamClient runs one upstream exchange, a login or a probe, on a
// connection Upstream.connect opened.
type upstreamClient struct {
	conn net.Conn // commands go over it (the TLS connection after STARTTLS)
	r    *bufio.Reader
	w    *bufio.Writer
	tag  int
	caps []string
	// capsSeen is set whenever caps is replaced by what the server said,
	// so login can tell whether its answer brought capabilities.
	capsSeen bool
	// onCredential is called just before the first byte of the password
	// is written; from then on an I/O error is ErrNoAnswer.
	onCredential func()
	credential   bool // the password is (partly) on the wire

	// transport is what release closes: the dialed connection, or the
	// implicit TLS one over it.
	transport net.Conn
	// deadline is the connection's; the end of the caller's context
	// breaks it until stopWatching is called.
	deadline     *connDeadline
	stopWatching func() bool
	// bufs are r's and w's, from the Upstream's pool; nil once handed
	// over with the connection.
	bufs *bufPair
}

// release ends the watch on the caller's context and, unless keep (the
// connection is handed over), closes the connection and gives the
// buffers back.
func (c *upstreamClient) release(keep bool) {
	c.stopWatching()
	if !keep {
		c.transport.Close()
		if c.bufs != nil {
			c.bufs.release()
			c.bufs, c.r, c.w = nil, nil, nil
		}
	}
}

// ioError classifies an I/O error of the login command: before the
// password was on the wire the upstream never saw the credential
// (ErrUnavailable); after, it may have judged it (ErrNoAnswer).
func (c *upstreamClient) ioError(what string, err error) error {
	if c.credential {
		return noAnswer(what, err)
	}
	return unavailable(what, err)
}

// sendingCredential marks the moment the password starts on its way.
func (c *upstreamClient) sendingCredential() {
	if c.credential {
		return
	}
	c.credential = true
	if c.onCredential != nil {
		c.onCredential()
	}
}

// greeting reads the server greeting.
func (c *upstreamClient) greeting() error {
	line, err := c.readResponse()
	if err != nil {
		return unavailable("greeting", err)
	}
	switch status, code, _ := imapwire.ParseStatus(line, "*"); status {
	case "OK":
		c.caps = imapwire.CapabilitiesFromCode(code)
		return nil
	case "PREAUTH":
		// A server that logs everyone in would make the proxy's
		// authentication meaningless.
		return protocolError("upstream greeted with PREAUTH")
	case "BYE":
		return unavailable("greeting", errors.New("upstream said BYE"))
	default:
		return protocolError("unexpected greeting %.40q", line)
	}
}

// startTLS upgrades the connection and re-reads capabilities.
func (c *upstreamClient) startTLS(ctx context.Context, cfg *tls.Config) error {
	if c.caps != nil && !c.has("STARTTLS") {
		return protocolError("upstream does not offer STARTTLS")
	}
	status, _, err := c.simple("STARTTLS")
	if err != nil {
		return err
	}
	if status != "OK" {
		return protocolError("upstream refused STARTTLS")
	}
	if c.r.Buffered() > 0 {
		// Bytes after the OK were sent in plaintext and would be read as if
		// they came over TLS: the CVE-2011-0411 injection.
		return protocolError("upstream sent %d bytes after STARTTLS OK", c.r.Buffered())
	}
	tc := tls.Client(newUpstreamSocket(c.conn), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return unavailable("STARTTLS handshake", err)
	}
	c.conn = tc
	c.r.Reset(tc)
	c.w.Reset(tc)
	c.caps = nil // RFC 3501 6.2.1: forget what was said before TLS
	return nil
}

// capability asks for the capabilities; the answer must list them.
func (c *upstreamClient) capability() error {
	c.caps = nil
	status, _, err := c.simple("CAPABILITY")
	if err != nil {
		return err
	}
	if status != "OK" || c.caps == nil {
		return protocolError("CAPABILITY failed")
	}
	return nil
}

// sendID tells the upstream who the client is (Dovecot's login_trusted_networks).
func (c *upstreamClient) sendID(ci ClientInfo) error {
	var b strings.Builder
	b.WriteString("ID (")
	if ci.Addr != nil {
		fmt.Fprintf(&b, `"x-originating-ip" "%s" "x-originating-port" "%d" `, ci.Addr.IP.String(), ci.Addr.Port)
	}
	if ci.Local != nil {
		fmt.Fprintf(&b, `"x-connected-ip" "%s" "x-connected-port" "%d" `, ci.Local.IP.String(), ci.Local.Port)
	}
	fmt.Fprintf(&b, `"x-session-id" "%s")`, ci.Session)
	_, _, err := c.simple(b.String())
	return err // a NO to ID is harmless
}

// loginCredential is what one login sends: PLAIN's three fields (RFC
// 4616), of which LOGIN carries authcid and password. authzid, the
// authorization identity, is "" but for a master login that names the
// mailbox there; LOGIN cannot carry it.
type loginCredential struct {
	authzid, authcid, password string
}

// login logs in with AUTHENTICATE PLAIN or LOGIN and returns the
// upstream's answer; err is set only when none came.
func (c *upstreamClient) login(method LoginMethod, cred loginCredential) (status, code string, err error) {
	usePlain := c.has("AUTH=PLAIN")
	switch {
	case method == LoginPlain || cred.authzid != "":
		if !usePlain {
			return "", "", protocolError("upstream does not offer AUTH=PLAIN")
		}
	case method == LoginLogin:
		usePlain = false
	}
	c.capsSeen = false // from here, capabilities come from the login's answer
	if usePlain {
		return c.authenticatePlain(cred)
	}
	if c.has("LOGINDISABLED") {
		return "", "", protocolError("upstream offers neither AUTH=PLAIN nor LOGIN")
	}
	return c.loginCommand(cred.authcid, cred.password)
}

func (c *upstreamClient) authenticatePlain(cred loginCredential) (status, code string, err error) {
	ir := base64.StdEncoding.EncodeToString([]byte(cred.authzid + "\x00" + cred.authcid + "\x00" + cred.password))
	tag := c.nextTag()
	if c.has("SASL-IR") {
		c.sendingCredential()
		err = c.send(tag + " AUTHENTICATE PLAIN " + ir + "\r\n")
	} else {
		// The credential leaves only after the "+": until then the
		// exchange is still bounded by the connect timeout.
		err = c.send(tag + " AUTHENTICATE PLAIN\r\n")
		if err == nil {
			var line []byte
			line, err = c.readUntilContinuation(tag)
			if err == nil && line != nil {
				// Tagged answer instead of "+": nothing was judged.
				return "", "", answeredEarly("AUTHENTICATE", line, tag)
			}
			if err == nil {
				c.sendingCredential()
				err = c.send(ir + "\r\n")
			}
		}
	}
	if err != nil {
		return "", "", c.ioError("AUTHENTICATE", err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", c.ioError("AUTHENTICATE", err)
		}
		if len(line) > 0 && line[0] == '+' {
			// PLAIN has one step; a second challenge is broken. Cancel.
			if err := c.send("*\r\n"); err != nil {
				return "", "", c.ioError("AUTHENTICATE", err)
			}
			continue
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

func (c *upstreamClient) loginCommand(user, password string) (status, code string, err error) {
	tag := c.nextTag()
	// Each argument is quoted when it can be, else a literal. The
	// password is the credential: the login deadline starts with its
	// first byte (for a synchronizing literal, after the "+").
	args := []string{user, password}
	if err := c.sendString(tag + " LOGIN "); err != nil {
		return "", "", unavailable("LOGIN", err)
	}
	for i, a := range args {
		isPassword := i == 1
		if isPassword {
			c.sendString(" ")
		}
		if q, ok := imapwire.Quote(a); ok && isASCII(a) {
			if isPassword {
				c.sendingCredential()
			}
			if err := c.sendString(q); err != nil {
				return "", "", c.ioError("LOGIN", err)
			}
			continue
		}
		if c.has("LITERAL+") || (c.has("LITERAL-") && len(a) <= 4096) {
			if isPassword {
				c.sendingCredential()
			}
			c.sendString("{" + strconv.Itoa(len(a)) + "+}\r\n" + a)
			continue
		}
		if err := c.send("{" + strconv.Itoa(len(a)) + "}\r\n"); err != nil {
			return "", "", unavailable("LOGIN", err)
		}
		line, err := c.readUntilContinuation(tag)
		if err != nil {
			return "", "", unavailable("LOGIN", err)
		}
		if line != nil {
			return "", "", answeredEarly("LOGIN", line, tag)
		}
		if isPassword {
			c.sendingCredential()
		}
		c.sendString(a)
	}
	if err := c.send("\r\n"); err != nil {
		return "", "", c.ioError("LOGIN", err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", c.ioError("LOGIN", err)
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

// answeredEarly is the error of a login command the upstream answered
// (tagged) before the password was sent: instead of the "+" that asks
// for it. Nothing was judged, so the attempt is given back
// (ErrUnavailable): a NO here must not count as a wrong password. And an
// OK is refused as well: a server that logs in without the password
// would make the proxy's authentication meaningless, as a PREAUTH
// greeting would.
func answeredEarly(cmd string, line []byte, tag string) error {
	status, _, _ := imapwire.ParseStatus(line, tag)
	return protocolError("%s answered %.20q before the password was sent", cmd, status)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// readUntilContinuation reads until "+ ..." (returns nil) or the tagged
// answer (returns it).
func (c *upstreamClient) readUntilContinuation(tag string) ([]byte, error) {
	for {
		line, err := c.readResponse()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 && line[0] == '+' {
			return nil, nil
		}
		if _, _, ok := imapwire.ParseStatus(line, tag); ok {
			return line, nil
		}
		c.untagged(line)
	}
}

// simple sends "TAG cmd" and reads to its tagged answer, noting untagged
// CAPABILITY responses on the way.
func (c *upstreamClient) simple(cmd string) (status, code string, err error) {
	tag := c.nextTag()
	if err := c.send(tag + " " + cmd + "\r\n"); err != nil {
		return "", "", unavailable(cmd, err)
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return "", "", unavailable(firstWord(cmd), err)
		}
		if s, cd, ok := imapwire.ParseStatus(line, tag); ok {
			c.noteCapsFromCode(s, cd)
			return s, cd, nil
		}
		c.untagged(line)
	}
}

func firstWord(s string) string {
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

func (c *upstreamClient) untagged(line []byte) {
	if caps, ok := bytes.CutPrefix(line, []byte("* CAPABILITY ")); ok {
		c.caps, c.capsSeen = strings.Fields(string(caps)), true
	}
}

func (c *upstreamClient) noteCapsFromCode(status, code string) {
	if status == "OK" {
		if caps := imapwire.CapabilitiesFromCode(code); caps != nil {
			c.caps, c.capsSeen = caps, true
		}
	}
}

func (c *upstreamClient) nextTag() string {
	c.tag++
	return "ig" + strconv.Itoa(c.tag)
}

func (c *upstreamClient) sendString(s string) error {
	_, err := c.w.WriteString(s)
	return err
}

func (c *upstreamClient) send(s string) error {
	if _, err := c.w.WriteString(s); err != nil {
		return err
	}
	return c.w.Flush()
}

// readResponse reads one response line, with any literals inlined, bounded
// by maxUpstreamLine and maxUpstreamLiteral.
func (c *upstreamClient) readResponse() ([]byte, error) {
	var out []byte
	for {
		line, err := imapwire.ReadLine(c.r, maxUpstreamLine)
		if err != nil {
			return nil, err
		}
		out = append(out, line...)
		if len(out) > maxUpstreamLine {
			return nil, errLineTooLong
		}
		size, _, ok := imapwire.LiteralAtEnd(line)
		if !ok {
			return out, nil
		}
		if size > maxUpstreamLiteral {
			return nil, errLiteralTooBig
		}
		lit := make([]byte, size)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			return nil, err
		}
		out = append(out, "\r\n"...)
		out = append(out, lit...)
	}
}

func (c *upstreamClient) has(capability string) bool {
	for _, cp := range c.caps {
		if strings.EqualFold(cp, capability) {
			return true
		}
	}
	return false
}
