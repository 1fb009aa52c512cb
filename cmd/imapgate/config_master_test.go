package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/proxy"
)

// TestMasterSecretFile: the secret is the file but one final newline; an
// empty one is refused; a file others may read is a warning naming the
// file, and the secret shows in no problem, warning or print of the
// config.
func TestMasterSecretFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
		err                 bool
	}{
		{"final newline trimmed", "S3cret!\n", "S3cret!", false},
		{"final CRLF trimmed", "S3cret!\r\n", "S3cret!", false},
		{"no newline", "S3cret!", "S3cret!", false},
		{"only the last newline", "S3cret!\n\n", "S3cret!\n", false},
		{"empty", "", "", true},
		{"just a newline", "\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := readMasterSecret(path)
			if (err != nil) != tc.err || s.Reveal() != tc.want {
				t.Errorf("readMasterSecret(%q) = %q, %v; want %q, error %v", tc.content, s.Reveal(), err, tc.want, tc.err)
			}
		})
	}

	path := filepath.Join(dir, "readable.secret")
	const secret = "Opens-Every-Mailbox-9"
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`[[listen]]
address = "0.0.0.0:993"
[tls]
cert_file = "testdata/config/files/cert.pem"
key_file = "testdata/config/files/key.pem"
[upstream]
address = "mail.internal:143"
[upstream.master]
user = "imapgate"
secret_file = %q
`, path)
	c, err := ParseConfig("imapgate.toml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	want := "imapgate.toml:10: upstream.master.secret_file: " + path + " may be read by others than its owner"
	if w := c.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], want) {
		t.Errorf("warnings %q, want one starting %q", w, want)
	}
	up, err := newUpstream(&c.Upstream)
	if err != nil {
		t.Fatal(err)
	}
	m := up.Master
	if m == nil || m.User != "imapgate" || m.Secret.Reveal() != secret || m.Form != proxy.MasterSASLAuthzid {
		t.Errorf("the running master login is %+v", m)
	}
	for _, shown := range []string{fmt.Sprintf("%+v", c), fmt.Sprintf("%+v", up.Master), strings.Join(c.Warnings(), "\n")} {
		if strings.Contains(shown, secret) {
			t.Errorf("the master secret shows in %q", shown)
		}
	}
}
