package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The memory-upstream logins: Dovecot's own login work (auth process,
// imap process, even when reused) bounds the logins of direct, nginx and imapgate alike. So logins
// runs a second time against `imapbench upstream` (go-imap's in-memory
// server) in place of Dovecot, through a second nginx and a second
// imapgate, and those rows measure the proxies' own login capacity.

// memoryUpstreamMode says, in the notes and the JSON, how the upstream
// runs.
const memoryUpstreamMode = "subprocess"

// memoryUpstream is `imapbench upstream` in its own process: this very
// executable (built by go run or go build) with the upstream subcommand,
// so that the upstream's CPU is not imapbench's.
type memoryUpstream struct {
	bin, dir, addr string
	users          int
	proc           *child
}

// memoryUpstreamArgs is the upstream's command line: Dovecot's users
// (user1..userN) with the same password, and one small message in
// user1's INBOX, which logins never look at.
func memoryUpstreamArgs(bin, addr string, users int) []string {
	return []string{bin, "upstream", "--addr", addr, "--users", strconv.Itoa(users),
		"--users-pattern", "user%d", "--password", comparePassword, "--messages", "1", "--message-size", "1000"}
}

// startMemoryUpstream starts the upstream on a fresh loopback port and
// waits for its (plaintext) greeting.
func startMemoryUpstream(ctx context.Context, dir string, users int) (*memoryUpstream, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("the memory upstream is this executable, which cannot be found: %w (or pass --memory-logins=false)", err)
	}
	for range startTries {
		u := &memoryUpstream{bin: bin, dir: dir, users: users}
		if u.addr, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		if err = u.start(ctx); err == nil {
			return u, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (u *memoryUpstream) start(ctx context.Context) error {
	p, err := startChild("imapbench upstream", u.dir, filepath.Join(u.dir, "upstream.log"), memoryUpstreamArgs(u.bin, u.addr, u.users)...)
	if err != nil {
		return err
	}
	u.proc = p
	if err := waitGreeting(ctx, u.addr, nil, p.exited, readyTimeout); err != nil {
		u.stop()
		return fmt.Errorf("imapbench upstream did not start: %v\n%s", err, p.tail())
	}
	return nil
}

func (u *memoryUpstream) pid() int {
	if u == nil || u.proc == nil {
		return 0
	}
	return u.proc.pid()
}

// stop sends SIGTERM, on which the upstream closes its sessions and
// exits, and kills it after stopGrace.
func (u *memoryUpstream) stop() error {
	if u == nil || u.proc == nil {
		return nil
	}
	err := u.proc.stop()
	u.proc = nil
	return err
}

// memoryServers are the servers of the memory-upstream logins: the
// upstream, and a second nginx (with its own auth_http responder, which
// sends every login to the upstream) and a second imapgate in front of
// it, configured as the first ones but for the upstream's address.
type memoryServers struct {
	up   *memoryUpstream
	auth *authResponder
	ngx  *nginxServer
	gate *imapgateServer
}

// startMemoryServers starts them, in dir's subdirectories upstream,
// nginx-memory and imapgate-memory. On an error, it stops what it
// started.
// The nginx gets tune (the storm's backlog and connections), imapgate
// extra.
func startMemoryServers(ctx context.Context, dir string, users int, nginxBin, gateBin, certFile, keyFile string, tune nginxTuning, extra gateExtra, tlsConf *tls.Config) (m *memoryServers, err error) {
	m = &memoryServers{}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.stop())
			m = nil
		}
	}()
	udir, ndir, gdir := filepath.Join(dir, "upstream"), filepath.Join(dir, "nginx-memory"), filepath.Join(dir, "imapgate-memory")
	for _, sub := range []string{udir, ndir, gdir} {
		if err := os.Mkdir(sub, 0o755); err != nil {
			return m, err
		}
	}
	if m.up, err = startMemoryUpstream(ctx, udir, users); err != nil {
		return m, err
	}
	if m.auth, err = startAuthResponder(ctx, ndir, m.up.addr); err != nil {
		return m, err
	}
	if m.ngx, err = startNginx(ctx, nginxBin, ndir, m.auth, certFile, keyFile, tune, tlsConf); err != nil {
		return m, fmt.Errorf("the second nginx (memory upstream): %w", err)
	}
	if m.gate, err = startImapgate(ctx, gateBin, gdir, m.up.addr, certFile, keyFile, upstreamTLS{}, extra, tlsConf); err != nil {
		return m, fmt.Errorf("the second imapgate (memory upstream): %w", err)
	}
	return m, nil
}

// stop stops the proxies, then the auth_http responder and the upstream.
// It may be called on a partly started set, and more than once.
func (m *memoryServers) stop() error {
	if m == nil {
		return nil
	}
	var err error
	if m.gate != nil {
		err = errors.Join(err, m.gate.stop())
	}
	if m.ngx != nil {
		err = errors.Join(err, m.ngx.stop())
	}
	err = errors.Join(err, m.auth.close())
	return errors.Join(err, m.up.stop())
}

// authRequests is how many logins the second nginx asked about.
func (m *memoryServers) authRequests() int64 {
	if m == nil {
		return 0
	}
	return m.auth.requests()
}
