package main

// The admin socket: a unix socket serve listens on, through which
// `imapgate app-password` and `imapgate client-cert` change the store serve
// holds open (README "App passwords", "Client certificates"), and
// `imapgate sessions` and `kick` reach the running server (README
// "Sessions and kick"). One JSON request per connection, one JSON answer.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy"
)

// adminRequest is one command sent to the admin socket.
type adminRequest struct {
	Op      string    `json:"op"` // "add", "list", "revoke"; "sessions", "kick" (sessions.go)
	User    string    `json:"user,omitempty"`
	Label   string    `json:"label,omitempty"`
	ID      string    `json:"id,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	Scope   []string  `json:"scope,omitempty"`
	// Certificate is a client certificate to register (DER; cert-add).
	Certificate []byte `json:"certificate,omitempty"`
}

// adminAnswer is the answer to one adminRequest: Error, or the result.
type adminAnswer struct {
	Error    string                  `json:"error,omitempty"`
	Password string                  `json:"password,omitempty"` // add: shown once
	Added    *credstore.AppPassword  `json:"added,omitempty"`
	List     []credstore.AppPassword `json:"list,omitempty"`
	Revoked  *credstore.Revoked      `json:"revoked,omitempty"`
	Sessions []proxy.SessionInfo     `json:"sessions,omitempty"`
	Kicked   *int                    `json:"kicked,omitempty"`
	// The client certificate operations' results (clientcert.go).
	CertAdded *credstore.ClientCert  `json:"cert_added,omitempty"`
	Certs     []credstore.ClientCert `json:"certs,omitempty"`
}

// adminTimeout bounds one admin connection.
const adminTimeout = 10 * time.Second

// adminListener is the bound admin socket. Close removes its file.
type adminListener struct {
	*net.UnixListener
	path string
}

func (l *adminListener) Close() error {
	err := l.UnixListener.Close()
	os.Remove(l.path)
	return err
}

// listenAdmin binds the admin socket at path, 0600. It is bound inside a
// fresh 0700 directory beside path and renamed into place once it is
// 0600, so that no one can connect in the moment between bind and chmod
// (the socket's permissions are checked at connect, not afterwards). A
// socket file left by a serve that died is replaced; one a running serve
// answers on is not.
func listenAdmin(path string) (*adminListener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin.socket: %s is in use by another process (is imapgate serve already running?)", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("admin.socket: %s exists and is not a socket", path)
	}
	private, err := os.MkdirTemp(filepath.Dir(path), ".admin-")
	if err != nil {
		return nil, fmt.Errorf("admin.socket: %w", err)
	}
	defer os.RemoveAll(private)
	bound := filepath.Join(private, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin.socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // its name moves to path, which Close removes
	if err := os.Chmod(bound, 0o600); err == nil {
		err = os.Rename(bound, path) // replaces a stale socket atomically
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin.socket: %w", err)
	}
	return &adminListener{UnixListener: ln, path: path}, nil
}

// serveAdmin answers admin requests on ln with store and srv until ctx
// ends, and returns once every request it took is answered, so that the
// store outlives them.
func serveAdmin(ctx context.Context, ln *adminListener, store appPasswords, srv sessionControl, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { ln.UnixListener.Close() })
	defer stop()
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() == nil {
				log.Error("admin socket: accept failed; no more admin requests", "err", err)
			}
			return
		}
		handlers.Go(func() { answerAdmin(ctx, c, store, srv, log) })
	}
}

// answerAdmin reads one request from c and answers it.
func answerAdmin(ctx context.Context, c *net.UnixConn, store appPasswords, srv sessionControl, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(adminTimeout))
	var req adminRequest
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(adminAnswer{Error: "malformed request"})
		return
	}
	ans := runAdmin(ctx, store, srv, req)
	log.Info("admin request", "op", req.Op, "user", req.User, "label", req.Label, "id", req.ID, "error", ans.Error)
	json.NewEncoder(c).Encode(ans)
}

// runAdmin carries out req on store, or on srv.
func runAdmin(ctx context.Context, store appPasswords, srv sessionControl, req adminRequest) adminAnswer {
	var ans adminAnswer
	var err error
	switch req.Op {
	case "sessions", "kick":
		return runSessionOp(srv, req)
	case opCertAdd, opCertList, opCertRevoke:
		ans, err = runCertAdmin(ctx, store, req)
	case "add":
		var p credstore.AppPassword
		p, ans.Password, err = store.add(ctx, credstore.NewAppPassword{User: req.User, Label: req.Label, Expires: req.Expires, Scope: req.Scope})
		ans.Added = &p
	case "list":
		ans.List, err = store.list(ctx, req.User)
	case "revoke":
		var r credstore.Revoked
		r, err = store.revoke(ctx, req.ID, req.User, req.Label)
		ans.Revoked = &r
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		return adminAnswer{Error: err.Error()}
	}
	return ans
}

// appPasswords is what the app-password commands need of a store: the
// store itself (storeAppPasswords) or the running serve's, through the
// admin socket (socketAppPasswords).
type appPasswords interface {
	add(ctx context.Context, req credstore.NewAppPassword) (credstore.AppPassword, string, error)
	list(ctx context.Context, user string) ([]credstore.AppPassword, error)
	// revoke revokes by id, or, when id is "", user's password label.
	revoke(ctx context.Context, id, user, label string) (credstore.Revoked, error)
	close() error
}

// storeAppPasswords is a store opened by this process.
type storeAppPasswords struct{ s credstore.Store }

func (a storeAppPasswords) add(ctx context.Context, req credstore.NewAppPassword) (credstore.AppPassword, string, error) {
	p, secret, err := a.s.AddAppPassword(ctx, req)
	return p, secret.Reveal(), err
}

func (a storeAppPasswords) list(ctx context.Context, user string) ([]credstore.AppPassword, error) {
	return a.s.ListAppPasswords(ctx, user)
}

func (a storeAppPasswords) revoke(ctx context.Context, id, user, label string) (credstore.Revoked, error) {
	if id != "" {
		return a.s.Revoke(ctx, id)
	}
	return a.s.RevokeLabel(ctx, credstore.KindAppPassword, user, label)
}

func (a storeAppPasswords) close() error { return a.s.Close() }

// socketAppPasswords sends each command to the admin socket at path.
type socketAppPasswords struct{ path string }

func (a socketAppPasswords) call(ctx context.Context, req adminRequest) (adminAnswer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", a.path)
	if err != nil {
		return adminAnswer{}, fmt.Errorf("admin socket: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(adminTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return adminAnswer{}, fmt.Errorf("admin socket: %w", err)
	}
	var ans adminAnswer
	if err := json.NewDecoder(c).Decode(&ans); err != nil {
		return adminAnswer{}, fmt.Errorf("admin socket: no answer: %w", err)
	}
	if ans.Error != "" {
		return ans, errors.New(ans.Error)
	}
	return ans, nil
}

func (a socketAppPasswords) add(ctx context.Context, req credstore.NewAppPassword) (credstore.AppPassword, string, error) {
	ans, err := a.call(ctx, adminRequest{Op: "add", User: req.User, Label: req.Label, Expires: req.Expires, Scope: req.Scope})
	if err != nil || ans.Added == nil {
		return credstore.AppPassword{}, "", cmpErr(err, "admin socket: add answered nothing")
	}
	return *ans.Added, ans.Password, nil
}

func (a socketAppPasswords) list(ctx context.Context, user string) ([]credstore.AppPassword, error) {
	ans, err := a.call(ctx, adminRequest{Op: "list", User: user})
	return ans.List, err
}

func (a socketAppPasswords) revoke(ctx context.Context, id, user, label string) (credstore.Revoked, error) {
	ans, err := a.call(ctx, adminRequest{Op: "revoke", ID: id, User: user, Label: label})
	if err != nil || ans.Revoked == nil {
		return credstore.Revoked{}, cmpErr(err, "admin socket: revoke answered nothing")
	}
	return *ans.Revoked, nil
}

func (socketAppPasswords) close() error { return nil }

// cmpErr is err, or a new error with msg when err is nil.
func cmpErr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// noStore answers the admin socket of a serve without auth.app_passwords.
type noStore struct{}

var errNoStore = errors.New("auth.app_passwords is not set in the running config: there is no app password store")

func (noStore) add(context.Context, credstore.NewAppPassword) (credstore.AppPassword, string, error) {
	return credstore.AppPassword{}, "", errNoStore
}
func (noStore) list(context.Context, string) ([]credstore.AppPassword, error) { return nil, errNoStore }
func (noStore) revoke(context.Context, string, string, string) (credstore.Revoked, error) {
	return credstore.Revoked{}, errNoStore
}
func (noStore) close() error { return nil }
