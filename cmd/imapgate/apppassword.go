package main

// imapgate app-password add|list|revoke: the app passwords of the store
// named by auth.app_passwords (README "App passwords").

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
)

const appPasswordUsage = `Usage:
  imapgate app-password add USER --label L [--expires D] [--scope LISTENER,...] [--config PATH]
  imapgate app-password list [USER] [--config PATH]
  imapgate app-password revoke ID [--config PATH]
  imapgate app-password revoke USER --label L [--config PATH]

--expires takes a duration ("90d", "720h") or a date ("2027-06-30").
The store is the config's auth.app_passwords. While serve runs it holds
the store; the commands then go through its admin.socket (and a revocation
ends that password's open sessions), or, without one, need serve stopped.
`

// appPasswordCommand runs imapgate app-password and returns the exit code.
func appPasswordCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, appPasswordUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("app-password "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "config file `PATH`")
	label := fs.String("label", "", "the device's `LABEL`")
	expires := fs.String("expires", "", "expiry: a duration (90d, 720h) or a date (2027-06-30)")
	scope := fs.String("scope", "", "comma-separated `LISTENERS` where the password works (default: all)")
	// USER or ID may come before the flags, as the usage writes it.
	var pos []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = args[:1], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	pos = append(pos, fs.Args()...)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "imapgate app-password %s: %v\n", sub, err)
		return 1
	}
	switch {
	case sub == "add" && (len(pos) != 1 || *label == ""):
		fmt.Fprint(stderr, "imapgate app-password add: needs USER and --label\n\n"+appPasswordUsage)
		return 2
	case sub == "list" && len(pos) > 1, sub == "revoke" && len(pos) != 1:
		fmt.Fprint(stderr, appPasswordUsage)
		return 2
	case sub != "add" && sub != "list" && sub != "revoke":
		fmt.Fprintf(stderr, "imapgate app-password: unknown command %q\n\n%s", sub, appPasswordUsage)
		return 2
	}
	req := credstore.NewAppPassword{Label: *label}
	if *expires != "" {
		t, err := parseExpiry(*expires, time.Now())
		if err != nil {
			return fail(err)
		}
		req.Expires = t
	}
	if *scope != "" {
		req.Scope = strings.Split(*scope, ",")
	}
	store, err := openStoreOf(*path)
	if err != nil {
		return fail(err)
	}
	defer store.close()
	ctx := context.Background()
	switch sub {
	case "add":
		req.User = pos[0]
		p, secret, err := store.add(ctx, req)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "App password for %s, label %q, id %s:\n\n    %s\n\n", p.User, p.Label, p.ID, secret)
		fmt.Fprintf(stdout, "SCRAM login name: %s\nIt is shown only this once; imapgate keeps only a keyed hash of it.\n", p.SCRAMLogin())
	case "list":
		user := ""
		if len(pos) == 1 {
			user = pos[0]
		}
		list, err := store.list(ctx, user)
		if err != nil {
			return fail(err)
		}
		writeAppPasswords(stdout, list)
	case "revoke":
		id, user := pos[0], ""
		if *label != "" {
			id, user = "", pos[0]
		}
		r, err := store.revoke(ctx, id, user, *label)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "revoked app password %s of %s, label %q\n", r.ID, r.User, r.Label)
	}
	return 0
}

// openStoreOf opens the store named by the config at path, or, when
// serve holds it, reaches it through serve's admin socket.
func openStoreOf(path string) (appPasswords, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if cfg.Auth.AppPasswords == "" {
		return nil, fmt.Errorf("%s: auth.app_passwords is not set: there is no app password store", path)
	}
	// A serve answering on the socket holds the store: ask it at once
	// rather than wait out the file's lock.
	if cfg.Admin.Socket != "" {
		if c, err := net.DialTimeout("unix", cfg.Admin.Socket, time.Second); err == nil {
			c.Close()
			return socketAppPasswords{path: cfg.Admin.Socket}, nil
		}
	}
	store, err := credstore.OpenBolt(cfg.Auth.AppPasswords, credstore.Options{})
	switch {
	case err == nil:
		return storeAppPasswords{store}, nil
	case errors.Is(err, credstore.ErrLocked) && cfg.Admin.Socket != "":
		return nil, fmt.Errorf("%w\n%s is held by another process, and nothing answers on admin.socket %s", err, cfg.Auth.AppPasswords, cfg.Admin.Socket)
	case errors.Is(err, credstore.ErrLocked):
		return nil, fmt.Errorf("%w\n%s is held by the running imapgate serve, which has no admin.socket: set [admin] socket and restart it, or stop it to change app passwords", err, cfg.Auth.AppPasswords)
	}
	return nil, err
}

// writeAppPasswords prints a list of app passwords as a table.
func writeAppPasswords(w io.Writer, list []credstore.AppPassword) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tLABEL\tCREATED\tEXPIRES\tSCOPE\tLAST USED\tFROM")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04")
	}
	for _, p := range list {
		scope, from := strings.Join(p.Scope, ","), "-"
		if scope == "" {
			scope = "all"
		}
		if p.LastAddr.IsValid() {
			from = p.LastAddr.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.User, p.Label, day(p.Created), day(p.Expires), scope, day(p.LastUsed), from)
	}
	tw.Flush()
}

// parseExpiry reads --expires: days ("90d"), a Go duration ("720h"), a
// date ("2027-06-30", midnight UTC) or an RFC 3339 time, from now.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 {
			return now.Add(time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d), nil
	}
	for _, layout := range []string{"2006-01-02", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--expires %q is not a duration (90d, 720h) or a date (2027-06-30)", s)
}
