package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/imapgate/imapgate/proxy/memupstream"
)

// upstreamOptions configure `imapbench upstream`: an in-memory IMAP server
// in its own process, so a load test measures the proxy alone. It is
// go-imap's imapmemserver: light enough for 10,000 idle sessions, where a
// Dovecot would need a process per session.
type upstreamOptions struct {
	Addr     string
	Users    int
	Pattern  string
	Password string
	Messages int // in the first user's INBOX
	Size     int
}

// runUpstream serves until ctx is done.
func runUpstream(ctx context.Context, o upstreamOptions, out io.Writer) error {
	users := make(map[string]string, o.Users)
	for i := 1; i <= o.Users; i++ {
		users[fmt.Sprintf(o.Pattern, i)] = o.Password
	}
	up, err := memupstream.StartOn(o.Addr, users)
	if err != nil {
		return err
	}
	defer up.Close()
	first := fmt.Sprintf(o.Pattern, 1)
	body := strings.Repeat("The quick brown fox jumps over the lazy dog.\r\n", max(1, o.Size/46))
	for i := 0; i < o.Messages; i++ {
		msg := fmt.Sprintf("From: bench@imapgate.test\r\nTo: %s@imapgate.test\r\nSubject: message %d\r\nMessage-ID: <bench-%d@imapgate.test>\r\n\r\n%s", first, i+1, i+1, body)
		if err := up.AddMessage(first, "INBOX", []byte(msg)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "upstream listening on %s: %d users (%s), %d messages in %s's INBOX\n", up.Addr, o.Users, fmt.Sprintf(o.Pattern, 1)+"..", o.Messages, first)
	<-ctx.Done()
	return nil
}

// upstreamFlags parses the upstream subcommand's flags.
func upstreamFlags(args []string, stderr io.Writer) (upstreamOptions, error) {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := upstreamOptions{}
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:0", "listen `host:port` (loopback)")
	fs.IntVar(&o.Users, "users", 100, "number of users")
	fs.StringVar(&o.Pattern, "users-pattern", "user%d", "user name pattern")
	fs.StringVar(&o.Password, "password", "pass1-Secret!", "password of every user")
	fs.IntVar(&o.Messages, "messages", 10, "messages in the first user's INBOX")
	fs.IntVar(&o.Size, "message-size", 2048, "approximate message size in bytes")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if !strings.HasPrefix(o.Addr, "127.") && !strings.HasPrefix(o.Addr, "[::1]") && !strings.HasPrefix(o.Addr, "localhost") {
		return o, fmt.Errorf("upstream: --addr must be a loopback address")
	}
	return o, nil
}
