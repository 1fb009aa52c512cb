package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeServeConfig writes a minimal valid config listening on addr.
func writeServeConfig(t *testing.T, addr string) string {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, _ := writeCertFiles(t, dir)
	path := filepath.Join(dir, "imapgate.toml")
	cfg := fmt.Sprintf("[[listen]]\naddress = %q\n\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\naddress = \"127.0.0.1:1\"\ntls = \"none\"\n\n[audit]\noutput = %q\n",
		addr, certFile, keyFile, filepath.Join(dir, "audit.log"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCommandLine(t *testing.T) {
	good := writeServeConfig(t, "127.0.0.1:10993")
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[[listen]]\naddress = \"127.0.0.1:993\"\n\n[upstream]\naddress = \"x:143\"\ntls = \"startls\"\n"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := writeServeConfig(t, busy.Addr().String())

	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderrHas []string
	}{
		{"check-config ok", []string{"check-config", "--config", good}, 0, "ok\n", nil},
		{"check-config bad", []string{"check-config", "--config", bad}, 1, "", []string{bad + ":6: upstream.tls: \"startls\" is not one of none, starttls, implicit"}},
		{"check-config missing file", []string{"check-config", "--config", "/nonexistent/imapgate.toml"}, 1, "", []string{"/nonexistent/imapgate.toml"}},
		{"serve bad config", []string{"serve", "--config", bad}, 1, "", []string{"upstream.tls"}},
		{"serve port in use", []string{"serve", "--config", inUse}, 1, "", []string{"cannot bind " + busy.Addr().String()}},
		{"version", []string{"version"}, 0, "imapgate ", nil},
		{"unknown command", []string{"frobnicate"}, 2, "", []string{"unknown command"}},
		{"no command", nil, 2, "", []string{"Usage"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), tt.stdout) {
				t.Fatalf("stdout = %q, want prefix %q", stdout.String(), tt.stdout)
			}
			for _, s := range tt.stderrHas {
				if !strings.Contains(stderr.String(), s) {
					t.Fatalf("stderr = %q, want it to contain %q", stderr.String(), s)
				}
			}
		})
	}
}
