package credstore

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// requireTool skips the test when a program the test drives is missing,
// or fails it when CI=true, where .ci/run installed them all.
func requireTool(t *testing.T, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if _, err := exec.LookPath(path); err == nil {
		return
	}
	msg := fmt.Sprintf("%s not installed (%s)", path, why)
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// scramServer is just enough of an IMAP server for one SCRAM-SHA-256
// AUTHENTICATE (RFC 3501, RFC 4959), whose keys come from the store.
type scramServer struct {
	ln     net.Listener
	store  Store
	result chan scramResult
}

type scramResult struct {
	login string // the name the client's first message carried, decoded
	valid bool
	err   error
}

func startSCRAMServer(t *testing.T, store Store) *scramServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &scramServer{ln: ln, store: store, result: make(chan scramResult, 1)}
	t.Cleanup(func() { ln.Close() })
	go srv.serve()
	return srv
}

func (srv *scramServer) serve() {
	c, err := srv.ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256] test\r\n")
	var res scramResult
	defer func() { srv.result <- res }()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		tag, cmd := f[0], strings.ToUpper(f[1])
		switch {
		case cmd == "CAPABILITY":
			fmt.Fprintf(c, "* CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256\r\n%s OK done\r\n", tag)
		case cmd == "AUTHENTICATE" && len(f) >= 3 && strings.EqualFold(f[2], "SCRAM-SHA-256"):
			res = srv.authenticate(c, r, f[3:])
			if !res.valid {
				fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] no\r\n", tag)
				return
			}
			fmt.Fprintf(c, "%s OK [CAPABILITY IMAP4rev1] in\r\n", tag)
		case cmd == "LIST":
			fmt.Fprintf(c, "* LIST () \"/\" INBOX\r\n%s OK done\r\n", tag)
		case cmd == "LOGOUT":
			fmt.Fprintf(c, "* BYE\r\n%s OK done\r\n", tag)
			return
		default:
			fmt.Fprintf(c, "%s BAD not in this test\r\n", tag)
		}
	}
}

func (srv *scramServer) authenticate(c net.Conn, r *bufio.Reader, ir []string) (res scramResult) {
	server, _ := scram.SHA256.NewServer(func(login string) (scram.StoredCredentials, error) {
		res.login = login
		sc, err := srv.store.LookupSCRAM(context.Background(), login, "")
		res.err = err
		return sc.Keys, err
	})
	conv := server.NewConversation()
	next := func() (string, bool) {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", false
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimRight(line, "\r\n"))
		return string(b), err == nil
	}
	var msg string
	if len(ir) > 0 && ir[0] != "=" {
		b, err := base64.StdEncoding.DecodeString(ir[0])
		if err != nil {
			return res
		}
		msg = string(b)
	} else {
		fmt.Fprintf(c, "+ \r\n")
		var ok bool
		if msg, ok = next(); !ok {
			return res
		}
	}
	for !conv.Done() {
		out, err := conv.Step(msg)
		if err != nil {
			return res
		}
		fmt.Fprintf(c, "+ %s\r\n", base64.StdEncoding.EncodeToString([]byte(out)))
		var ok bool
		if msg, ok = next(); !ok {
			return res
		}
	}
	res.valid = conv.Valid()
	return res
}

// TestRealClientsLogInWithSCRAMAsUserHashID is the separator's proof with
// SCRAM implementations other than xdg-go's: mbsync through Cyrus SASL's
// SCRAM-SHA-256 plugin, and GNU SASL's gsasl, send "user#id" as they were
// given it, and their proofs check against the keys stored when the
// password was made.
func TestRealClientsLogInWithSCRAMAsUserHashID(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice@example.com", Label: "desktop"})
	for _, client := range []struct {
		name  string
		check func(t *testing.T)
		run   func(ctx context.Context, t *testing.T, port, login, password string) (out string, listed bool)
	}{
		{"mbsync (Cyrus SASL)", func(t *testing.T) {
			requireTool(t, "mbsync", "Debian's isync")
			requireTool(t, "/usr/lib/x86_64-linux-gnu/sasl2/libscram.so", "Cyrus SASL's SCRAM plugin, Debian's libsasl2-modules")
		}, runMbsync},
		{"gsasl", func(t *testing.T) { requireTool(t, "gsasl", "Debian's gsasl") }, runGsasl},
	} {
		for _, tc := range []struct {
			name, password string
			valid          bool
		}{
			{"the app password", secret.Reveal(), true},
			{"a wrong password", mistype(secret.Reveal()), false},
		} {
			t.Run(client.name+"/"+tc.name, func(t *testing.T) {
				client.check(t)
				srv := startSCRAMServer(t, s)
				_, port, _ := net.SplitHostPort(srv.ln.Addr().String())
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, listed := client.run(ctx, t, port, p.SCRAMLogin(), tc.password)
				var res scramResult
				select {
				case res = <-srv.result:
				case <-ctx.Done():
					t.Fatalf("the client never finished a login; it said:\n%s", out)
				}
				if res.login != p.SCRAMLogin() {
					t.Fatalf("the server saw the login name %q, want %q; the client said:\n%s", res.login, p.SCRAMLogin(), out)
				}
				if res.valid != tc.valid {
					t.Fatalf("proof valid %v, want %v (lookup: %v); the client said:\n%s", res.valid, tc.valid, res.err, out)
				}
				if tc.valid && !listed {
					t.Fatalf("the client did not go on after the login, so it did not accept the server's signature:\n%s", out)
				}
				if strings.Contains(out, tc.password) {
					t.Fatalf("the client printed the password")
				}
			})
		}
	}
}

// runMbsync lists the far side's mailboxes: "INBOX" in its output means
// it logged in and accepted the server's signature.
func runMbsync(ctx context.Context, t *testing.T, port, login, password string) (string, bool) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "mbsyncrc")
	err := os.WriteFile(conf, fmt.Appendf(nil, `IMAPAccount t
Host 127.0.0.1
Port %s
User %s
Pass %s
AuthMechs SCRAM-SHA-256
SSLType None

IMAPStore far
Account t

MaildirStore near
Path %s/
Inbox %s/INBOX

Channel t
Far :far:
Near :near:
Patterns INBOX
`, port, login, password, dir, dir), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.CommandContext(ctx, "mbsync", "-c", conf, "-l", "t").CombinedOutput()
	return string(out), strings.Contains(string(out), "INBOX")
}

// runGsasl logs in IMAP-style and logs out: a LOGOUT reached the server
// only after the client checked the server's signature.
func runGsasl(ctx context.Context, t *testing.T, port, login, password string) (string, bool) {
	cmd := exec.CommandContext(ctx, "gsasl", "--client", "--imap", "--no-starttls",
		"--connect=127.0.0.1:"+port, "-m", "SCRAM-SHA-256", "-a", login, "-z", "", "-p", password)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}
