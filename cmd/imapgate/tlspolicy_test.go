package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// startPolicyGate runs serve with file certificates and the given
// [[listen]] tables; it returns the operational log.
func startPolicyGate(t *testing.T, listens string) *lockedBuffer {
	t.Helper()
	certFile, keyFile, _ := writeCertFiles(t, t.TempDir())
	return startPolicyGateWith(t, certFile, keyFile, listens)
}

// startPolicyGateWith is startPolicyGate serving the given certificate.
func startPolicyGateWith(t *testing.T, certFile, keyFile, listens string) *lockedBuffer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`shutdown_timeout = "1s"
%s
[tls]
cert_file = %q
key_file = %q

[upstream]
address = %q
tls = "none"

[audit]
output = %q
`, listens, certFile, keyFile, startMemUpstream(t), filepath.Join(dir, "audit.log"))
	path := filepath.Join(dir, "imapgate.toml")
	os.WriteFile(path, []byte(cfg), 0o600)
	stderr := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() { exit <- serve(ctx, path, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exit:
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), `"msg":"listening"`) || strings.Count(stderr.String(), `"msg":"listening"`) < strings.Count(listens, "[[listen]]") {
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return stderr
}

// opensslTLS11 connects with an OpenSSL client that offers only TLS 1.1
// (at security level 0, which Debian's OpenSSL needs for TLS 1.1).
func opensslTLS11(addr string) (string, error) {
	// -ign_eof: read the server's answers to LOGOUT before leaving.
	cmd := exec.Command("openssl", "s_client", "-connect", addr, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-crlf", "-ign_eof")
	cmd.Stdin = strings.NewReader("a LOGOUT\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestTLS11RefusedByDefaultAcceptedWhereAllowed: an old client speaking
// TLS 1.1 gets no handshake on a default listener, and one on the listener
// that sets min_version = "1.1", which start-up warns about loudly.
func TestTLS11RefusedByDefaultAcceptedWhereAllowed(t *testing.T) {
	proxytest.RequireTool(t, "openssl")
	ports := proxytest.FreePorts(t, 2)
	modern, legacy := ports[0], ports[1]
	log := startPolicyGate(t, fmt.Sprintf(`
[[listen]]
address = %q

[[listen]]
address = %q
min_version = "1.1"
`, modern, legacy))

	// A failed handshake still prints "Protocol : TLSv1.1" (what was
	// offered), with "Cipher is (NONE)".
	out, err := opensslTLS11(modern)
	if err == nil || !strings.Contains(out, "Cipher is (NONE)") || strings.Contains(out, "* OK") {
		t.Fatalf("TLS 1.1 client got a handshake on the default listener: %v\n%s", err, tail(out, 2000))
	}
	out, err = opensslTLS11(legacy)
	if err != nil || !strings.Contains(out, "Protocol  : TLSv1.1") || !strings.Contains(out, "* OK [CAPABILITY") || !strings.Contains(out, "a OK") {
		t.Fatalf("TLS 1.1 client refused on the listener with min_version 1.1: %v\n%s", err, tail(out, 2000))
	}

	warn := fmt.Sprintf(`"level":"WARN","msg":"INSECURE: listener accepts deprecated TLS 1.1 (RFC 8996); keep it for old clients only","listener":%q`, legacy)
	if !strings.Contains(log.String(), warn) {
		t.Fatalf("no loud start-up warning for %s:\n%s", legacy, log.String())
	}
	if strings.Contains(log.String(), fmt.Sprintf(`"listener":%q,"min_version"`, modern)) {
		t.Fatalf("the default listener was warned about")
	}
}

// TestACMEConfigCheckedWithoutTheCA: check-config builds the ACME manager
// (CA root, TSIG secret, hook) but contacts nothing: a CA on a port where
// nothing listens is not noticed, a TSIG secret that is not base64 is.
func TestACMEConfigCheckedWithoutTheCA(t *testing.T) {
	dir := t.TempDir()
	_, rootPEM, _ := tlsconf.SelfSigned(time.Hour, "ca.example")
	root := filepath.Join(dir, "root.pem")
	os.WriteFile(root, rootPEM, 0o644)
	goodSecret := filepath.Join(dir, "good.key")
	os.WriteFile(goodSecret, []byte("key \"k\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0IGZvciB0ZXN0cyBvbmx5\";\n};\n"), 0o600)
	badSecret := filepath.Join(dir, "bad.key")
	os.WriteFile(badSecret, []byte("not base64 !!!\n"), 0o600)
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o644)
	closed := proxytest.FreePort(t) // nothing listens there
	tests := []struct {
		name, acme, want string
	}{
		{"unreachable CA is not contacted", fmt.Sprintf("ca = \"https://%s/dir\"\nca_root = %q\nchallenge = \"dns-01\"\ndns_provider = \"rfc2136\"\ndns_server = %q\ntsig_key_name = \"k\"\ntsig_secret_file = %q", closed, root, closed, goodSecret), "ok"},
		{"TSIG secret not base64", fmt.Sprintf("challenge = \"dns-01\"\ndns_provider = \"rfc2136\"\ndns_server = %q\ntsig_key_name = \"k\"\ntsig_secret_file = %q", closed, badSecret), "tsig_secret_file: " + badSecret + ": rfc2136: the TSIG secret is not base64"},
		{"CA root without a certificate", fmt.Sprintf("ca_root = %q", notPEM), "tls.acme.ca_root: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "imapgate.toml")
			ports := proxytest.FreePorts(t, 2)
			os.WriteFile(path, []byte(fmt.Sprintf("[[listen]]\naddress = %q\n\n[tls.acme]\ndomains = [\"imap.example.test\"]\nstorage = %q\nchallenge_listen = %q\n%s\n\n[upstream]\naddress = \"127.0.0.1:143\"\ntls = \"none\"\n",
				ports[0], filepath.Join(t.TempDir(), "acme"), ports[1], tt.acme)), 0o600)
			var stdout, stderr strings.Builder
			start := time.Now()
			code := checkConfig(path, &stdout, &stderr)
			got := strings.TrimSpace(stdout.String() + stderr.String())
			if tt.want == "ok" {
				if code != 0 || got != "ok" {
					t.Fatalf("check-config = %d %q, want 0 ok", code, got)
				}
			} else if code != 1 || !strings.Contains(got, tt.want) {
				t.Fatalf("check-config = %d %q, want 1 and %q", code, got, tt.want)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("check-config took %v: did it contact something?", took)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), "acme")); err == nil {
				t.Fatalf("check-config created the storage directory")
			}
		})
	}
	// Nothing may have connected to the closed port: still free.
	ln, err := net.Listen("tcp", closed)
	if err != nil {
		t.Fatalf("port %s taken: %v", closed, err)
	}
	ln.Close()
}

// TestServeExitsWhenTheChallengeListenerIsTaken: a responder that cannot
// bind is a start-up error (exit 1, the address and the cause on stderr),
// not a silent failure at the first renewal.
func TestServeExitsWhenTheChallengeListenerIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "imapgate.toml")
	os.WriteFile(path, []byte(fmt.Sprintf("[[listen]]\naddress = %q\n\n[tls.acme]\ndomains = [\"imap.example.test\"]\nstorage = %q\nchallenge_listen = %q\n\n[upstream]\naddress = \"127.0.0.1:143\"\ntls = \"none\"\n",
		proxytest.FreePort(t), filepath.Join(dir, "acme"), taken.Addr().String())), 0o600)
	var stderr strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code := serve(ctx, path, &stderr); code != 1 {
		t.Fatalf("serve = %d, want 1", code)
	}
	want := "tls.acme: tlsconf: ACME tls-alpn-01 responder: cannot bind " + taken.Addr().String()
	if !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "address already in use") {
		t.Fatalf("stderr lacks %q:\n%s", want, stderr.String())
	}
}
