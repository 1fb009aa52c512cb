package tlsconf

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUpstreamVerification(t *testing.T) {
	server, serverPEM := mustSelfSigned(t, "imap.example.test", "127.0.0.1")
	_, otherPEM := mustSelfSigned(t, "imap.example.test")
	// An old Exchange server: self-signed for its internal host name.
	exchange, _ := mustSelfSigned(t, "EXCH01.corp.local")
	stranger, _ := mustSelfSigned(t, "EXCH01.corp.local")

	dir := t.TempDir()
	serverCA := filepath.Join(dir, "server-ca.pem")
	writeFile(t, serverCA, serverPEM)
	otherCA := filepath.Join(dir, "other-ca.pem")
	writeFile(t, otherCA, otherPEM)

	serverAddr := serveTLS(t, server, nil)
	exchangeAddr := serveTLS(t, exchange, nil)

	tests := []struct {
		name    string
		addr    string
		opts    UpstreamOptions
		wantErr []string // empty: the handshake must succeed
	}{
		{"CA file trusts the server", serverAddr,
			UpstreamOptions{ServerName: "imap.example.test", CAFile: serverCA}, nil},
		{"wrong CA file", serverAddr,
			UpstreamOptions{ServerName: "imap.example.test", CAFile: otherCA}, []string{"certificate"}},
		{"right CA, wrong name", serverAddr,
			UpstreamOptions{ServerName: "mail.example.test", CAFile: serverCA}, []string{"mail.example.test"}},
		{"system roots do not trust a self-signed server", serverAddr,
			UpstreamOptions{ServerName: "imap.example.test"}, []string{"certificate"}},
		{"pin accepts a self-signed certificate for another name", exchangeAddr,
			UpstreamOptions{ServerName: "mail.corp.example", PinSHA256: SPKIPin(exchange.Leaf)}, nil},
		{"pin without a server name", exchangeAddr,
			UpstreamOptions{PinSHA256: SPKIPin(exchange.Leaf)}, nil},
		{"wrong pin", exchangeAddr,
			UpstreamOptions{ServerName: "mail.corp.example", PinSHA256: SPKIPin(stranger.Leaf)},
			[]string{"pin mismatch", "expected " + SPKIPin(stranger.Leaf), "got " + SPKIPin(exchange.Leaf)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := UpstreamConfig(tt.opts)
			if err != nil {
				t.Fatalf("UpstreamConfig: %v", err)
			}
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %#x, want TLS 1.2", cfg.MinVersion)
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tt.addr, cfg)
			if conn != nil {
				conn.Close()
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("handshake failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("handshake succeeded, want it refused")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestUpstreamPinStillSendsServerNameAsSNI(t *testing.T) {
	exchange, _ := mustSelfSigned(t, "EXCH01.corp.local")
	sni := make(chan string, 1)
	addr := serveTLS(t, exchange, sni)
	cfg, err := UpstreamConfig(UpstreamOptions{ServerName: "mail.corp.example", PinSHA256: SPKIPin(exchange.Leaf)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case got := <-sni:
		if got != "mail.corp.example" {
			t.Errorf("server saw SNI %q, want mail.corp.example", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no ClientHello")
	}
}

func TestUpstreamConfigRejectsIncompleteOptions(t *testing.T) {
	cert, _ := mustSelfSigned(t, "x.example.test")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("hello\n"))

	tests := []struct {
		name string
		opts UpstreamOptions
		want string
	}{
		{"nothing to verify against", UpstreamOptions{}, "ServerName is required"},
		{"CA file without server name", UpstreamOptions{CAFile: garbage}, "ServerName is required"},
		{"missing CA file", UpstreamOptions{ServerName: "x", CAFile: filepath.Join(dir, "nope.pem")}, "nope.pem"},
		{"CA file without certificates", UpstreamOptions{ServerName: "x", CAFile: garbage}, garbage + ": no PEM certificates"},
		{"bad pin", UpstreamOptions{ServerName: "x", PinSHA256: "abc"}, "not base64"},
		{"pin and CA file", UpstreamOptions{ServerName: "x", CAFile: garbage, PinSHA256: SPKIPin(cert.Leaf)}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := UpstreamConfig(tt.opts)
			if err == nil {
				t.Fatalf("UpstreamConfig(%+v) = %+v, want an error", tt.opts, cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestUpstreamConfigWithoutPinVerifies(t *testing.T) {
	cfg, err := UpstreamConfig(UpstreamOptions{ServerName: "imap.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InsecureSkipVerify || cfg.VerifyConnection != nil || cfg.RootCAs != nil {
		t.Errorf("without a pin or CA file: want Go's verification against system roots, got %+v", cfg)
	}
}

func TestParsePin(t *testing.T) {
	cert, _ := mustSelfSigned(t, "x.example.test")
	pin := SPKIPin(cert.Leaf)
	raw, _ := base64.StdEncoding.DecodeString(pin)

	tests := []struct {
		name string
		in   string
		want string // error substring; empty means valid
	}{
		{"valid", pin, ""},
		{"valid with spaces", "  " + pin + "\n", ""},
		{"curl format", "sha256//" + pin, ""},
		{"empty", "", "empty"},
		{"not base64", "not a pin!", "not base64"},
		{"URL encoding", strings.NewReplacer("+", "-", "/", "_").Replace(pin) + "-_", "not base64"},
		{"too short", base64.StdEncoding.EncodeToString(raw[:20]), "decodes to 20 bytes, want 32"},
		{"SHA-1 sized", base64.StdEncoding.EncodeToString(make([]byte, 20)), "want 32"},
		{"hex", hex.EncodeToString(raw), "is hex; want the SHA-256 in base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePin(tt.in)
			if tt.want == "" {
				if err != nil || string(got) != string(raw) {
					t.Fatalf("ParsePin(%q) = %x, %v; want %x", tt.in, got, err, raw)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParsePin(%q) error = %v, want one containing %q", tt.in, err, tt.want)
			}
		})
	}
}
