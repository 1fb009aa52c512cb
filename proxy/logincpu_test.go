package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/auth/oauth"
	"github.com/imapgate/imapgate/proxy/internal/imapwire"
	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
	xdg "github.com/xdg-go/scram"
)

// The CPU time of one login, per mechanism (README "Performance"): the
// proxy's own work for a client that connects over implicit TLS (a full
// handshake, or a resumed one), authenticates and logs out, with an
// upstream that answers at once. The client and the upstream run in a child process
// (this test binary again, TestLoginCPUChild), so the process's CPU time
// (getrusage) is the proxy's alone: the client's handshake and its SCRAM
// key derivation are not counted, nor the upstream's work.
//
//	go test -run '^$' -bench LoginCPU -benchtime 2000x ./proxy/

// loginCPUCase is one way of logging in: what the proxy is configured
// with, and what the child client sends.
type loginCPUCase struct {
	name string
	// bare makes the proxy's side a bare TLS server in place of
	// imapgate (the floor, like cmd/imapbench's BareServerHandshake,
	// measured in this same harness): it completes the handshake, writes
	// one byte and closes, and the child client only handshakes.
	bare bool
	// configure sets up the proxy's side (mechanisms, verifiers, stores,
	// the listener's TLS) and returns the environment the child client
	// needs (IMAPGATE_LOGINCPU_*).
	configure func(b *testing.B, cfg *Config, tc *tls.Config) []string
}

var loginCPUCases = []loginCPUCase{
	{name: "bare-handshake", bare: true, configure: func(*testing.B, *Config, *tls.Config) []string { return nil }},
	{name: "PLAIN-passthrough", configure: func(*testing.B, *Config, *tls.Config) []string {
		return []string{"IMAPGATE_LOGINCPU_IR=" + plainIR(testUser, testPass)}
	}},
	{name: "PLAIN-app-password", configure: func(b *testing.B, cfg *Config, _ *tls.Config) []string {
		store, secret := benchAppPassword(b)
		cfg.AppPasswords = store
		return []string{"IMAPGATE_LOGINCPU_IR=" + plainIR(testUser, secret)}
	}},
	{name: "OAUTHBEARER", configure: func(b *testing.B, cfg *Config, _ *tls.Config) []string {
		v, token := benchIssuer(b) // an RS256 JWT; the issuer's keys are cached
		cfg.Mechanisms = []string{auth.OAuthBearer}
		cfg.Verifiers = &auth.Verifiers{Tokens: v}
		return []string{"IMAPGATE_LOGINCPU_MECH=OAUTHBEARER",
			"IMAPGATE_LOGINCPU_IR=" + encodeIR("n,a=user1,\x01auth=Bearer "+token+"\x01\x01")}
	}},
	{name: "SCRAM-SHA-256", configure: func(b *testing.B, cfg *Config, _ *tls.Config) []string {
		return benchSCRAM(b, cfg, auth.SCRAMSHA256)
	}},
	{name: "SCRAM-SHA-256-PLUS", configure: func(b *testing.B, cfg *Config, _ *tls.Config) []string {
		return benchSCRAM(b, cfg, auth.SCRAMSHA256Plus)
	}},
	{name: "EXTERNAL", configure: func(b *testing.B, cfg *Config, tc *tls.Config) []string {
		var ca *proxytest.ClientCA // self-signed device certificates
		phone := ca.Issue(b, proxytest.ClientCertOptions{CommonName: "alice's phone"})
		tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest}.Apply(tc)
		// The mapper is the tests' in-memory one: the store's lookup
		// (auth/credstore's BenchmarkVerifyClientCert) is not counted.
		cfg.Mechanisms = []string{auth.External}
		cfg.Verifiers = &auth.Verifiers{Certs: &keyMapper{users: map[string]auth.Credential{
			string(phone.Cert.RawSubjectPublicKeyInfo): {Kind: auth.CredentialClientCert, ID: "k3f9x2ab", Label: testUser},
		}, gone: map[string]bool{}}}
		certFile, keyFile := phone.WriteFiles(b, b.TempDir(), "phone")
		return []string{"IMAPGATE_LOGINCPU_MECH=EXTERNAL", "IMAPGATE_LOGINCPU_IR==",
			"IMAPGATE_LOGINCPU_CLIENT_CERT=" + certFile, "IMAPGATE_LOGINCPU_CLIENT_KEY=" + keyFile}
	}},
}

// benchAppPassword opens a credential store with one app password of
// testUser, and returns it and the password.
func benchAppPassword(b *testing.B) (*credstore.Bolt, string) {
	store, err := credstore.OpenBolt(filepath.Join(b.TempDir(), "credentials.db"), credstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	_, secret, err := store.AddAppPassword(context.Background(), credstore.NewAppPassword{User: testUser, Label: "phone"})
	if err != nil {
		b.Fatal(err)
	}
	return store, secret.Reveal()
}

// benchSCRAM configures SCRAM mechanism mech on an app password's keys.
func benchSCRAM(b *testing.B, cfg *Config, mech string) []string {
	store, secret := benchAppPassword(b)
	list, err := store.ListAppPasswords(context.Background(), testUser)
	if err != nil || len(list) != 1 {
		b.Fatalf("ListAppPasswords: %v, %d", err, len(list))
	}
	v, err := auth.NewSCRAMVerifier(credstore.SCRAMKeys(store), store.SCRAMOptions())
	if err != nil {
		b.Fatal(err)
	}
	cfg.Mechanisms = []string{mech}
	cfg.Verifiers = &auth.Verifiers{SCRAM: v}
	cfg.AppPasswords = store
	return []string{"IMAPGATE_LOGINCPU_MECH=" + mech,
		"IMAPGATE_LOGINCPU_SCRAM_LOGIN=" + list[0].SCRAMLogin(), "IMAPGATE_LOGINCPU_SCRAM_PASS=" + secret}
}

// The client offers Go's default key exchanges (the hybrid
// X25519MLKEM768 first, which imapgate accepts); for the bare handshake
// and PLAIN pass-through also X25519 alone, as OpenSSL 3.0's clients do,
// so that every login figure has its floor in the same run:
//
//	go test -run '^$' -bench 'LoginCPU/(bare|PLAIN-passthrough/)' -benchtime 2000x ./proxy/
func BenchmarkLoginCPU(b *testing.B) {
	for _, c := range loginCPUCases {
		for _, resume := range []bool{false, true} {
			for _, x25519 := range []bool{false, true} {
				if x25519 && !c.bare && c.name != "PLAIN-passthrough" {
					continue
				}
				name := c.name + "/full-handshake"
				if resume {
					name = c.name + "/resumed" // TLS 1.3 resumption: the mechanism's share shows
				}
				if x25519 {
					name += "-X25519"
				}
				b.Run(name, func(b *testing.B) { benchLoginCPU(b, c, resume, x25519) })
			}
		}
	}
}

func benchLoginCPU(b *testing.B, c loginCPUCase, resume, x25519 bool) {
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		b.Fatal(err)
	}
	store.Add(cert)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	upFile, err := upLn.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	defer upFile.Close()
	cfg := &Config{
		Upstream: &Upstream{Address: upLn.Addr().String(), TLS: UpstreamPlaintext, Master: &MasterLogin{User: "master", Secret: NewSecret("master-secret")}},
		Audit:    NewAuditor(discard{}, nil),
	}
	upLn.Close() // the child serves it, from upFile
	tc := tlsconf.ServerConfig(store, 0)
	env := c.configure(b, cfg, tc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if c.bare {
		go serveBareHandshakes(ln, tc)
		defer ln.Close()
	} else {
		srv := NewServer(cfg)
		go srv.Serve(ln, Listener{Name: "implicit", Mode: TLSImplicit, TLSConfig: tc})
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		}()
	}
	caFile := b.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoginCPUChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env,
		"IMAPGATE_LOGINCPU_CHILD=1",
		"IMAPGATE_LOGINCPU_PROXY="+ln.Addr().String(),
		"IMAPGATE_LOGINCPU_CA="+caFile,
		"IMAPGATE_LOGINCPU_N="+strconv.Itoa(b.N),
		"IMAPGATE_LOGINCPU_RESUME="+strconv.FormatBool(resume),
		"IMAPGATE_LOGINCPU_BARE="+strconv.FormatBool(c.bare),
		"IMAPGATE_LOGINCPU_X25519="+strconv.FormatBool(x25519))
	cmd.ExtraFiles = []*os.File{upFile} // fd 3 in the child
	cmd.Stderr = os.Stderr
	before := cpuTime(b)
	b.ResetTimer()
	out, err := cmd.Output()
	b.StopTimer()
	used := cpuTime(b) - before
	if err != nil || !strings.Contains(string(out), "logins ok") {
		b.Fatalf("child client: %v\n%s", err, out)
	}
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/login")
	var resumed int
	var curve string
	fmt.Sscanf(string(out[strings.Index(string(out), "logins ok"):]), "logins ok, %d resumed, key exchange %s", &resumed, &curve)
	if resume && resumed < b.N-1 { // the first login of a run has no ticket yet
		b.Fatalf("%d of %d logins resumed their TLS session", resumed, b.N)
	}
	want := "X25519MLKEM768"
	if x25519 {
		want = "X25519"
	}
	if curve != want {
		b.Fatalf("key exchange %q, want %q", curve, want)
	}
}

// serveBareHandshakes is the floor's server: imapgate's TLS configuration
// and nothing else, like `imapbench handshake-server`. The byte it writes
// makes the client read the session ticket that follows the handshake.
func serveBareHandshakes(ln net.Listener, tc *tls.Config) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveBareHandshake(tls.Server(c, tc))
	}
}

func serveBareHandshake(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if c.Handshake() == nil {
		c.Write([]byte{'.'})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestLoginCPUChild is the client and the upstream of BenchmarkLoginCPU,
// run in a child process; it does nothing in a normal test run.
func TestLoginCPUChild(t *testing.T) {
	if os.Getenv("IMAPGATE_LOGINCPU_CHILD") != "1" {
		t.Skip("the child process of BenchmarkLoginCPU")
	}
	ln, err := net.FileListener(os.NewFile(3, "upstream"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // ends acceptInstant
	go acceptInstant(ln)
	n, _ := strconv.Atoi(os.Getenv("IMAPGATE_LOGINCPU_N"))
	pem, err := os.ReadFile(os.Getenv("IMAPGATE_LOGINCPU_CA"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if os.Getenv("IMAPGATE_LOGINCPU_X25519") == "true" {
		tc.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	if os.Getenv("IMAPGATE_LOGINCPU_RESUME") == "true" {
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	if f := os.Getenv("IMAPGATE_LOGINCPU_CLIENT_CERT"); f != "" {
		pair, err := tls.LoadX509KeyPair(f, os.Getenv("IMAPGATE_LOGINCPU_CLIENT_KEY"))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	mech := os.Getenv("IMAPGATE_LOGINCPU_MECH")
	if mech == "" {
		mech = "PLAIN"
	}
	var sc *xdg.Client // SCRAM: its keys are derived once (xdg-go caches them per salt)
	if login := os.Getenv("IMAPGATE_LOGINCPU_SCRAM_LOGIN"); login != "" {
		if sc, err = xdg.SHA256.NewClient(login, os.Getenv("IMAPGATE_LOGINCPU_SCRAM_PASS"), ""); err != nil {
			t.Fatal(err)
		}
	}
	resumed := 0
	var curve tls.CurveID
	for i := range n {
		var err error
		if os.Getenv("IMAPGATE_LOGINCPU_BARE") == "true" {
			err = childHandshake(os.Getenv("IMAPGATE_LOGINCPU_PROXY"), tc, &resumed, &curve)
		} else {
			err = childLogin(os.Getenv("IMAPGATE_LOGINCPU_PROXY"), tc, mech, os.Getenv("IMAPGATE_LOGINCPU_IR"), sc, &resumed, &curve)
		}
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	fmt.Printf("logins ok, %d resumed, key exchange %s\n", resumed, curve)
}

// childHandshake is the floor's client: a handshake, and the server's byte.
func childHandshake(addr string, tc *tls.Config, resumed *int, curve *tls.CurveID) error {
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	if st.DidResume {
		*resumed++
	}
	*curve = st.CurveID
	var b [1]byte
	_, err = io.ReadFull(conn, b[:])
	return err
}

// childLogin connects, authenticates with mech and the initial response
// ir (base64), or with SCRAM's conversation when sc is set, and logs out.
func childLogin(addr string, tc *tls.Config, mech, ir string, sc *xdg.Client, resumed *int, curve *tls.CurveID) error {
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return err
	}
	st := conn.ConnectionState()
	if st.DidResume {
		*resumed++
	}
	*curve = st.CurveID
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := imapwire.ReadLine(r, 4096); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	var conv *xdg.ClientConversation
	if sc != nil {
		conv = sc.NewConversation()
		if mech == auth.SCRAMSHA256Plus {
			st := conn.ConnectionState()
			cb, err := xdg.NewTLSExporterBinding(&st)
			if err != nil {
				return err
			}
			conv = sc.NewConversationWithChannelBinding(cb)
		}
		first, err := conv.Step("")
		if err != nil {
			return err
		}
		ir = encodeIR(first)
	}
	if _, err := fmt.Fprintf(conn, "a AUTHENTICATE %s %s\r\n", mech, ir); err != nil {
		return err
	}
	for {
		line, err := imapwire.ReadLine(r, 64<<10)
		if err != nil {
			return fmt.Errorf("AUTHENTICATE: %w", err)
		}
		if strings.HasPrefix(string(line), "a OK") {
			break
		}
		if strings.HasPrefix(string(line), "a ") {
			return fmt.Errorf("AUTHENTICATE: %s", line)
		}
		if !strings.HasPrefix(string(line), "+") {
			continue
		}
		if conv == nil {
			return fmt.Errorf("unexpected challenge %q", line)
		}
		challenge, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(string(line), "+")))
		if err != nil {
			return err
		}
		out, err := conv.Step(string(challenge))
		if err != nil {
			return fmt.Errorf("SCRAM: %w", err)
		}
		if _, err := conn.Write([]byte(base64.StdEncoding.EncodeToString([]byte(out)) + "\r\n")); err != nil {
			return err
		}
	}
	if _, err := conn.Write([]byte("b LOGOUT\r\n")); err != nil {
		return err
	}
	for {
		line, err := imapwire.ReadLine(r, 4096)
		if err != nil || strings.HasPrefix(string(line), "b ") {
			return nil
		}
	}
}

// encodeIR is a SASL-IR initial response for msg (RFC 4959).
func encodeIR(msg string) string {
	if msg == "" {
		return "="
	}
	return base64.StdEncoding.EncodeToString([]byte(msg))
}

// benchIssuer is a minimal OpenID Provider on loopback (discovery and an
// RS256 key) and one token it signed, 2048-bit like the providers'.
func benchIssuer(b *testing.B) (*oauth.Validator, string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	srv = httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	payload, _ := json.Marshal(map[string]any{"iss": srv.URL, "aud": "imap", "sub": "u1", "email": "user1",
		"exp": time.Now().Add(time.Hour).Unix(), "jti": "t1", "client_id": "mailapp"})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), "k1"))
	if err != nil {
		b.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		b.Fatal(err)
	}
	token, _ := jws.CompactSerialize()
	v, err := oauth.New(oauth.Config{Issuer: srv.URL, Audiences: []string{"imap"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	return v, token
}
