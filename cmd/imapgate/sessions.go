package main

// imapgate sessions and imapgate kick: who is logged in through the
// running serve, and ending their sessions, through its admin socket
// (README "Sessions and kick").

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/proxy"
)

const sessionsUsage = `Usage:
  imapgate sessions [--json] [--config PATH]
  imapgate kick USER [--config PATH]
  imapgate kick --credential ID [--config PATH]

Both talk to the running serve through its admin.socket. kick ends the
sessions (session_end reason kicked); the user may log in again at once:
to keep a device out, revoke its credential (imapgate app-password revoke).
`

// sessionControl is what sessions and kick need of the running server
// (*proxy.Server).
type sessionControl interface {
	ListSessions() []proxy.SessionInfo
	Kick(user string) int
	KickCredential(id string) int
}

// runSessionOp answers the admin socket's "sessions" and "kick" ops.
func runSessionOp(srv sessionControl, req adminRequest) adminAnswer {
	switch {
	case srv == nil:
		return adminAnswer{Error: "serve has no server running yet"}
	case req.Op == "sessions":
		return adminAnswer{Sessions: srv.ListSessions()}
	case req.ID != "":
		n := srv.KickCredential(req.ID)
		return adminAnswer{Kicked: &n}
	case req.User != "":
		n := srv.Kick(req.User)
		return adminAnswer{Kicked: &n}
	}
	return adminAnswer{Error: "kick needs a user or a credential id"}
}

// sessionsCommand runs imapgate sessions and imapgate kick (cmd) and
// returns the exit code.
func sessionsCommand(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "config file `PATH`")
	asJSON := fs.Bool("json", false, "print JSON, one object per session (sessions)")
	credential := fs.String("credential", "", "kick the sessions of the credential `ID`")
	// USER may come before the flags, as the usage writes it.
	var pos []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = args[:1], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	pos = append(pos, fs.Args()...)
	req := adminRequest{Op: "sessions"}
	switch {
	case cmd == "sessions" && (len(pos) > 0 || *credential != ""),
		cmd == "kick" && *asJSON,
		cmd == "kick" && (len(pos) == 1) == (*credential != ""),
		len(pos) > 1:
		fmt.Fprint(stderr, sessionsUsage)
		return 2
	case cmd == "kick":
		req = adminRequest{Op: "kick", ID: *credential}
		if len(pos) == 1 {
			req.User = pos[0]
		}
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "imapgate %s: %v\n", cmd, err)
		return 1
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return fail(err)
	}
	if cfg.Admin.Socket == "" {
		return fail(fmt.Errorf("%s: admin.socket is not set: only a serve with an admin socket can be asked", *path))
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	ans, err := socketAppPasswords{path: cfg.Admin.Socket}.call(ctx, req)
	if err != nil {
		return fail(err)
	}
	switch {
	case cmd == "kick" && ans.Kicked == nil:
		return fail(errors.New("admin socket: kick answered nothing"))
	case cmd == "kick":
		who := "user " + req.User
		if req.ID != "" {
			who = "credential " + req.ID
		}
		fmt.Fprintf(stdout, "ended %d session(s) of %s\n", *ans.Kicked, who)
	case *asJSON:
		enc := json.NewEncoder(stdout)
		for _, s := range ans.Sessions {
			enc.Encode(s)
		}
	default:
		writeSessions(stdout, ans.Sessions, time.Now())
	}
	return 0
}

// writeSessions prints sessions as a table.
func writeSessions(w io.Writer, list []proxy.SessionInfo, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tCREDENTIAL\tKIND\tID\tMECHANISM\tCLIENT\tLISTENER\tUPSTREAM\tSINCE\tIN\tOUT")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, s := range list {
		since := s.Since.UTC().Format("2006-01-02 15:04:05") + " (" + now.Sub(s.Since).Truncate(time.Second).String() + ")"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", s.User, dash(s.CredentialLabel), dash(s.Credential), dash(s.CredentialID),
			s.Mechanism, s.Client, s.Listener, s.Upstream, since, s.BytesIn, s.BytesOut)
	}
	tw.Flush()
}
