package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The client's commands: logging in, SELECT, NOOP, IDLE and DONE,
// LOGOUT, each sent as one tagged line and read to its tagged response.

// authenticate logs in as user with AUTHENTICATE PLAIN (SASL-IR), or with
// LOGIN when t.Login is set.
func (c *client) authenticate(ctx context.Context, t target, user string) error {
	if t.Login {
		return c.login(ctx, user, t.Password)
	}
	return c.authenticatePlain(ctx, user, t.Password)
}

func (c *client) authenticatePlain(ctx context.Context, user, pass string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	return c.expectOK(ctx, "AUTHENTICATE", "AUTHENTICATE PLAIN "+ir)
}

func (c *client) login(ctx context.Context, user, pass string) error {
	qu, err := quote(user)
	if err != nil {
		return &stepError{"LOGIN", fmt.Errorf("user name: %w", err)}
	}
	qp, err := quote(pass)
	if err != nil {
		return &stepError{"LOGIN", fmt.Errorf("password: %w", err)}
	}
	return c.expectOK(ctx, "LOGIN", "LOGIN "+qu+" "+qp)
}

// selectInbox selects INBOX and returns its message count (EXISTS).
func (c *client) selectInbox(ctx context.Context) (int64, error) {
	r, err := c.command(ctx, "SELECT", false, "SELECT INBOX")
	if err != nil {
		return 0, err
	}
	if r.Status != "OK" {
		return 0, &stepError{"SELECT", &statusError{r.Status, r.Text}}
	}
	return max(r.Exists, 0), nil
}

func (c *client) noop(ctx context.Context) error { return c.expectOK(ctx, "NOOP", "NOOP") }

func (c *client) logout(ctx context.Context) error { return c.expectOK(ctx, "LOGOUT", "LOGOUT") }

// idle sends IDLE and waits for the server's continuation request
// ("+ idling"). The command ends with done.
func (c *client) idle(ctx context.Context) (tag string, err error) {
	r, err := c.command(ctx, "IDLE", true, "IDLE")
	if err != nil {
		return "", err
	}
	if !r.Continuation {
		return "", &stepError{"IDLE", &statusError{r.Status, r.Text}}
	}
	return r.Tag, nil
}

// done ends the IDLE command tag and waits for its tagged OK.
func (c *client) done(ctx context.Context, tag string) error {
	end := c.begin(ctx)
	defer end()
	if _, err := c.conn.Write([]byte("DONE\r\n")); err != nil {
		return c.fail(ctx, "DONE", err)
	}
	var r response
	if err := c.readResponse(tag, false, &r); err != nil {
		return c.fail(ctx, "DONE", err)
	}
	if r.Status != "OK" {
		return &stepError{"DONE", &statusError{r.Status, r.Text}}
	}
	return nil
}

func (c *client) expectOK(ctx context.Context, step, cmd string) error {
	r, err := c.command(ctx, step, false, cmd)
	if err != nil {
		return err
	}
	if r.Status != "OK" {
		return &stepError{step, &statusError{r.Status, r.Text}}
	}
	return nil
}

// command sends "TAG cmd" and reads until its tagged response, or until a
// continuation request when cont is set. step names the command in
// errors; cmd itself may carry credentials and never appears in one.
func (c *client) command(ctx context.Context, step string, cont bool, cmd string) (response, error) {
	end := c.begin(ctx)
	defer end()
	c.tagN++
	tag := "a" + strconv.Itoa(c.tagN)
	c.wbuf = append(append(append(append(c.wbuf[:0], tag...), ' '), cmd...), '\r', '\n')
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return response{}, c.fail(ctx, step, err)
	}
	r := response{Tag: tag}
	if err := c.readResponse(tag, cont, &r); err != nil {
		return r, c.fail(ctx, step, err)
	}
	return r, nil
}

// response is what the client saw from a command's start to its end.
type response struct {
	Tag          string
	Status       string // "OK", "NO" or "BAD"; "" for a continuation
	Text         string // the rest of the tagged line, at most headMax bytes
	Continuation bool   // the server sent "+ ..." (read with cont set)
	WireBytes    int64  // every byte of every response line and literal
	BodyBytes    int64  // bytes inside literals
	Literals     int
	Untagged     int
	Fetches      int   // "* N FETCH" responses
	Exists       int64 // the last "* N EXISTS", or -1
	Bye          string
}

// quote makes an IMAP quoted string. CR, LF and NUL cannot be quoted.
func quote(s string) (string, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", errors.New("contains CR, LF or NUL, which a quoted string cannot carry")
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String(), nil
}
