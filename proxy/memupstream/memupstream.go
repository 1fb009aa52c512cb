// Package memupstream runs an in-memory IMAP server (go-imap's
// imapmemserver) on loopback: the upstream of `imapgate demo` and of the
// proxy's fast tests. It is not a mail server; real tests use Dovecot.
//
//	up, err := memupstream.Start(map[string]string{"demo": "demo-password"})
//	defer up.Close()
//	up.AddMessage("demo", "INBOX", []byte("Subject: hi\r\n\r\nhello\r\n"))
//	// point the proxy at up.Addr with tls = "none"
package memupstream

import (
	"bytes"
	"fmt"
	"log"
	"net"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Server is a running in-memory upstream.
type Server struct {
	// Addr is the plaintext listener, "127.0.0.1:PORT".
	Addr string

	mem   *imapmemserver.Server
	srv   *imapserver.Server
	ln    net.Listener
	mu    sync.Mutex
	users map[string]*imapmemserver.User
	done  chan struct{}
}

// Caps are the capabilities the upstream advertises.
var Caps = imap.CapSet{
	imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapIdle: {}, imap.CapMove: {},
	imap.CapUIDPlus: {}, imap.CapNamespace: {}, imap.CapLiteralPlus: {}, imap.CapSASLIR: {},
	imap.CapID: {}, imap.CapESearch: {}, imap.CapListStatus: {},
}

// Start listens on 127.0.0.1 on a free port and serves users (name ->
// password), each with an empty INBOX.
func Start(users map[string]string) (*Server, error) {
	return StartOn("127.0.0.1:0", users)
}

// StartOn is Start on a given address.
func StartOn(addr string, users map[string]string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("memupstream: %w", err)
	}
	s := &Server{Addr: ln.Addr().String(), mem: imapmemserver.New(), ln: ln,
		users: map[string]*imapmemserver.User{}, done: make(chan struct{})}
	for name, pass := range users {
		u := imapmemserver.NewUser(name, pass)
		if err := u.Create("INBOX", nil); err != nil {
			ln.Close()
			return nil, fmt.Errorf("memupstream: %w", err)
		}
		s.mem.AddUser(u)
		s.users[name] = u
	}
	s.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return s.mem.NewSession(), nil, nil
		},
		Caps:         Caps,
		InsecureAuth: true, // loopback only
		Logger:       log.New(discard{}, "", 0),
	})
	go s.serve()
	return s, nil
}

func (s *Server) serve() {
	defer close(s.done)
	s.srv.Serve(s.ln)
}

// AddMessage appends msg to a user's mailbox.
func (s *Server) AddMessage(user, mailbox string, msg []byte) error {
	s.mu.Lock()
	u := s.users[user]
	s.mu.Unlock()
	if u == nil {
		return fmt.Errorf("memupstream: no user %q", user)
	}
	_, err := u.Append(mailbox, literal{bytes.NewReader(msg)}, &imap.AppendOptions{})
	return err
}

// Close stops the server and closes its connections.
func (s *Server) Close() error {
	err := s.srv.Close()
	// Serve may not have registered the listener yet: close it here too.
	s.ln.Close()
	<-s.done
	return err
}

type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
