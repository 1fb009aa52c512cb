package main

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

var updateGolden = flag.Bool("update", false, "rewrite the .err and .warn files in testdata/config")

// TestConfigFiles loads every testdata/config/*.toml as check-config would
// (files included) under the name "imapgate.toml". A file with a NAME.err
// next to it must fail with exactly those lines; any other must load, with
// exactly the warnings in NAME.warn (none if there is no such file).
func TestConfigFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test configs: %v", err)
	}
	// git keeps no 0600: without this, the configs naming it would warn.
	if err := os.Chmod("testdata/config/files/master.secret", 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			errFile := strings.TrimSuffix(file, ".toml") + ".err"
			warnFile := strings.TrimSuffix(file, ".toml") + ".warn"

			c, err := ParseConfig("imapgate.toml", data)
			var got, gotWarnings string
			if err != nil {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("error is %T, not *ConfigError: %v", err, err)
				}
				got = err.Error() + "\n"
			} else {
				gotWarnings = strings.Join(c.Warnings(), "\n")
				if gotWarnings != "" {
					gotWarnings += "\n"
				}
			}

			if *updateGolden {
				writeGolden(t, errFile, got)
				writeGolden(t, warnFile, gotWarnings)
				return
			}
			if want := readGolden(t, errFile); got != want {
				if want == "" {
					t.Fatalf("want no error, got:\n%s", got)
				}
				t.Fatalf("errors differ\n got:\n%s\nwant:\n%s", got, want)
			}
			if want := readGolden(t, warnFile); gotWarnings != want {
				t.Fatalf("warnings differ\n got:\n%s\nwant:\n%s", gotWarnings, want)
			}
		})
	}
}

func readGolden(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func writeGolden(t *testing.T, file, content string) {
	t.Helper()
	if content == "" {
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEveryBadConfigNamesItsLine keeps the golden files honest: every
// problem line of every .err file points at a real line of its .toml, and
// that line mentions the key's last part, or is the header of its table
// (a missing key is reported on its table). Line 0 is allowed only for a
// missing key whose table is not written at all.
func TestEveryBadConfigNamesItsLine(t *testing.T) {
	errFiles, _ := filepath.Glob("testdata/config/*.err")
	if len(errFiles) < 20 {
		t.Fatalf("only %d .err files", len(errFiles))
	}
	problemLine := regexp.MustCompile(`^imapgate\.toml:(\d+): ([^:]+): (.+)$`)
	for _, errFile := range errFiles {
		src, err := os.ReadFile(strings.TrimSuffix(errFile, ".err") + ".toml")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(src), "\n")
		for _, p := range strings.Split(strings.TrimSpace(readGolden(t, errFile)), "\n") {
			m := problemLine.FindStringSubmatch(p)
			if m == nil {
				t.Errorf("%s: %q is not PATH:LINE: key: problem", errFile, p)
				continue
			}
			var n int
			for _, d := range m[1] {
				n = n*10 + int(d-'0')
			}
			if n == 0 || m[2] == "syntax" {
				continue
			}
			if n > len(lines) {
				t.Errorf("%s: %q: line %d is past the end", errFile, p, n)
				continue
			}
			key := m[2]
			if strings.HasSuffix(key, "]") { // "policy.allow[1]": an element, on its own line or its list's
				key = key[:strings.LastIndex(key, "[")]
			}
			last := key[strings.LastIndexAny(key, ".]")+1:]
			text := lines[n-1]
			if !strings.Contains(text, strings.Trim(last, `"`)) && !strings.HasPrefix(strings.TrimSpace(text), "[") && !strings.HasPrefix(strings.TrimSpace(text), `"`) {
				t.Errorf("%s: %q: line %d is %q", errFile, p, n, text)
			}
		}
	}
}

// TestMinimalConfigGetsEveryDefault: a file with only the three
// required things gets every other value from the README's
// "Configuration reference".
func TestMinimalConfigGetsEveryDefault(t *testing.T) {
	c := mustParse(t, "testdata/config/good-minimal.toml")
	want := &Config{
		ShutdownTimeout: Duration{30 * time.Second},
		Listen:          []ListenConfig{{Address: "0.0.0.0:993", TLS: "implicit"}},
		TLS: TLSConfig{
			CertFile:   "testdata/config/files/cert.pem",
			KeyFile:    "testdata/config/files/key.pem",
			MinVersion: "1.2",
		},
		Upstream: UpstreamConfig{
			Address:         "mail.internal:143",
			TLS:             "starttls",
			ServerName:      "mail.internal",
			Login:           "auto",
			ForwardClientIP: "none",
			ConnectTimeout:  Duration{10 * time.Second},
			LoginTimeout:    Duration{30 * time.Second},
			Balance:         "round-robin",
			ProbeInterval:   Duration{10 * time.Second},
		},
		Routing: RoutingConfig{MapCheckInterval: Duration{30 * time.Second}, Timeout: Duration{10 * time.Second}},
		Auth:    AuthConfig{Mechanisms: []string{"PLAIN"}, LoginCommand: "refuse", Passthrough: true},
		Policy: PolicyConfig{
			MaxConnections:      20000,
			MaxConnectionsPerIP: 50,
			AuthFailuresPerIP:   10,
			AuthFailuresPerUser: 20,
			FailureWindow:       Duration{15 * time.Minute},
			FailureDelay:        Duration{2 * time.Second},
			MaxUpstreamLogins:   64,
			PreauthTimeout:      Duration{60 * time.Second},
			IdleTimeout:         Duration{31 * time.Minute},

			AuthFailuresPerNetwork: 50,
			AuthFailuresPerDevice:  10,
			KnownDeviceFor:         Duration{720 * time.Hour},
			UpstreamLoginWait:      Duration{2 * time.Second},

			MaxConnectionsPerNetwork: 1000,
		},
		Audit: AuditConfig{Output: "stdout"},
		path:  "imapgate.toml",
	}
	want.Upstreams = []UpstreamConfig{want.Upstream}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", c, want)
	}
}

// TestACMEDefaults: an [tls.acme] table with only domains gets the
// defaults of the README's "[tls.acme]" table; without the table, ACME is
// nil.
func TestACMEDefaults(t *testing.T) {
	c := mustParse(t, "testdata/config/good-acme-tls-alpn.toml")
	want := &ACMEConfig{
		Domains:         []string{"imap.example.com", "mail.example.com"},
		Email:           "postmaster@example.com",
		CA:              "https://acme-v02.api.letsencrypt.org/directory",
		Storage:         "/var/lib/imapgate",
		Challenge:       "tls-alpn-01",
		ChallengeListen: ":443",
		TSIGAlgorithm:   "hmac-sha256",

		OnDemandPerHour:    10,
		RenewCheckInterval: Duration{10 * time.Minute},
	}
	if !reflect.DeepEqual(c.TLS.ACME, want) {
		t.Fatalf("got %+v\nwant %+v", c.TLS.ACME, want)
	}
	if c := mustParse(t, "testdata/config/good-minimal.toml"); c.TLS.ACME != nil {
		t.Fatalf("ACME is %+v without [tls.acme]", c.TLS.ACME)
	}
}

// TestEveryKeyReachesItsField: each key of a file that sets all of them
// ends up in the right field, normalised where the doc says so.
func TestEveryKeyReachesItsField(t *testing.T) {
	c := mustParse(t, "testdata/config/good-every-key.toml")
	cert, key := "testdata/config/files/cert.pem", "testdata/config/files/key.pem"
	want := &Config{
		ShutdownTimeout: Duration{45 * time.Second},
		Listen: []ListenConfig{
			{Address: "192.0.2.1:993", TLS: "implicit", ProxyProtocol: true, MinVersion: "1.3"},
			{Address: "[2001:db8::1]:143", TLS: "starttls", Mechanisms: []string{"PLAIN"}, Passthrough: ptr(true)},
		},
		TLS: TLSConfig{
			CertFile: cert, KeyFile: key, MinVersion: "1.3",
			Certificates: []CertPair{{CertFile: cert, KeyFile: key}},
		},
		Upstream: UpstreamConfig{
			Address:         "[2001:db8::25]:993",
			TLS:             "implicit",
			ServerName:      "mail.example.com",
			CAFile:          "testdata/config/files/ca.pem",
			PinSHA256:       "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
			Login:           "login",
			ForwardClientIP: "proxy-v2",
			ConnectTimeout:  Duration{3 * time.Second},
			LoginTimeout:    Duration{45 * time.Second},
			SourceAddresses: []string{"2001:db8::2", "192.0.2.2"},
			Master: &MasterConfig{User: "svc-imapgate", SecretFile: "testdata/config/files/master.secret",
				Form: "exchange-delegate", Separator: "/", Domain: "CORP"},
		},
		Auth: AuthConfig{Mechanisms: []string{"PLAIN"}, LoginCommand: "allow-over-tls",
			AppPasswords: "/var/lib/imapgate/credentials.db", Passthrough: false},
		Policy: PolicyConfig{
			MaxConnections:      1000,
			MaxConnectionsPerIP: 5,
			AuthFailuresPerIP:   3,
			AuthFailuresPerUser: 6,
			FailureWindow:       Duration{time.Hour},
			FailureDelay:        Duration{0},
			MaxUpstreamLogins:   8,
			TrustedProxies:      []string{"192.0.2.10/32", "2001:db8:1::/48"},
			Allow:               []string{"192.0.2.0/24", "2001:db8::/32"},
			Deny:                []string{"192.0.2.66/32"},
			PreauthTimeout:      Duration{20 * time.Second},
			IdleTimeout:         Duration{time.Hour},

			AuthFailuresPerNetwork: 30,
			AuthFailuresPerDevice:  4,
			KnownDeviceFor:         Duration{168 * time.Hour},
			UserDomain:             "Example.com",
			UserRealms:             []string{"EXAMPLE", "example.local"},
			UpstreamLoginQueue:     16,
			UpstreamLoginWait:      Duration{time.Second},

			MaxConnectionsPerNetwork: 100,
			Rules: []PolicyRule{
				{Networks: []string{"192.0.2.0/24"}, AuthFailuresPerIP: ptr(0), AuthFailuresPerNetwork: ptr(0),
					AuthFailuresPerUser: ptr(0), AuthFailuresPerDevice: ptr(0), FailureWindow: &Duration{time.Minute}, FailureDelay: &Duration{0}, Passthrough: ptr(true)},
				{Listeners: []string{"192.0.2.1:993"}, AuthFailuresPerIP: ptr(2)},
			},
		},
		Audit:   AuditConfig{Output: "/var/log/imapgate/audit.log", UserHashKeyFile: "testdata/config/files/userhash.key"},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9143"},
		Admin:   AdminConfig{Socket: "/run/imapgate/admin.sock"},
		path:    "imapgate.toml",
	}
	// The routing keys have their own file (good-upstreams.toml).
	want.Upstream.Balance, want.Upstream.ProbeInterval = "round-robin", Duration{10 * time.Second}
	want.Upstreams = []UpstreamConfig{want.Upstream}
	want.Routing = defaultRouting()
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", c, want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestInlineTablesAndDottedKeysMeanTheSame: the TOML spellings other
// than [table] headers load the same values.
func TestInlineTablesAndDottedKeysMeanTheSame(t *testing.T) {
	c := mustParse(t, "testdata/config/good-inline-tables.toml")
	wantListen := []ListenConfig{{Address: ":993", TLS: "implicit"}, {Address: ":143", TLS: "starttls"}}
	if !reflect.DeepEqual(c.Listen, wantListen) {
		t.Errorf("listen = %+v", c.Listen)
	}
	if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
		t.Errorf("tls = %+v", c.TLS)
	}
	if c.Upstream.Address != "127.0.0.1:143" || c.Upstream.TLS != "none" || c.Upstream.ServerName != "" {
		t.Errorf("upstream = %+v", c.Upstream)
	}
	if c.Policy.IdleTimeout.Duration != 45*time.Minute {
		t.Errorf("idle_timeout = %v", c.Policy.IdleTimeout)
	}
}

// TestExampleConfigLoads: imapgate.example.toml loads as it ships, with
// exactly the defaults (its files are on the target machine, not here).
func TestExampleConfigLoads(t *testing.T) {
	data, err := os.ReadFile("imapgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig("imapgate.example.toml", data, false)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if w := c.Warnings(); len(w) > 0 {
		t.Errorf("example config warnings: %q", w)
	}
	want := DefaultConfig()
	want.path = "imapgate.example.toml"
	want.Listen = []ListenConfig{{Address: "0.0.0.0:993", TLS: "implicit"}}
	want.TLS.CertFile = "/etc/imapgate/fullchain.pem"
	want.TLS.KeyFile = "/etc/imapgate/privkey.pem"
	want.Upstream.Address = "mail.internal:143"
	want.Upstream.ServerName = "mail.internal"
	want.Upstreams = []UpstreamConfig{want.Upstream}
	want.Policy.TrustedProxies, want.Policy.Allow, want.Policy.Deny = []string{}, []string{}, []string{}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example config\n got %+v\nwant %+v", c, want)
	}

	// And check-config, which checks files, names the missing certificate.
	_, err = ParseConfig("imapgate.example.toml", data)
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file: open /etc/imapgate/fullchain.pem: ") {
		if _, statErr := os.Stat("/etc/imapgate/fullchain.pem"); statErr == nil {
			t.Skip("this machine has /etc/imapgate/fullchain.pem")
		}
		t.Fatalf("ParseConfig(example) = %v, want the missing cert_file reported", err)
	}
}

// TestExampleACMEBlockLoads: the commented-out [tls.acme] block of the
// example is valid once uncommented (and the files removed), and shows
// the defaults.
func TestExampleACMEBlockLoads(t *testing.T) {
	data, err := os.ReadFile("imapgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	commentedKey := regexp.MustCompile(`^# ([a-z_]+ = .*|\[tls\.acme\])$`)
	var out []string
	inACME := false
	uncommented := 0
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "# [tls.acme]":
			inACME = true
		case strings.HasPrefix(line, "["):
			inACME = false
		case strings.HasPrefix(line, "cert_file =") || strings.HasPrefix(line, "key_file ="):
			line = "# " + line
		}
		if inACME && commentedKey.MatchString(line) {
			line = strings.TrimPrefix(line, "# ")
			uncommented++
		}
		out = append(out, line)
	}
	if uncommented != 21 { // the table and its 20 keys
		t.Fatalf("uncommented %d lines of [tls.acme], want 21", uncommented)
	}
	c, err := parseConfig("example-acme.toml", []byte(strings.Join(out, "\n")), false)
	if err != nil {
		t.Fatalf("example with [tls.acme]: %v", err)
	}
	want := defaultACME()
	want.Domains = []string{"imap.example.com"}
	want.Email = "postmaster@example.com"
	want.DNSResolvers = []string{}
	want.OnDemandAllow = []string{}
	if !reflect.DeepEqual(c.TLS.ACME, want) {
		t.Fatalf("acme\n got %+v\nwant %+v", c.TLS.ACME, want)
	}
}

// TestStructTagsMatchTheLoader: decoding the example straight into Config
// with BurntSushi/toml (the toml tags) uses every key and gives what
// LoadConfig gives, so the tags document the real key names.
func TestStructTagsMatchTheLoader(t *testing.T) {
	data, err := os.ReadFile("imapgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := parseConfig("imapgate.example.toml", data, false)
	if err != nil {
		t.Fatal(err)
	}
	decoded := DefaultConfig()
	md, err := toml.Decode(string(data), decoded)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("keys without a toml tag: %v", u)
	}
	decoded.path = loaded.path
	decoded.Upstream.ServerName = loaded.Upstream.ServerName // filled in by the loader
	decoded.Upstreams = loaded.Upstreams                     // toml:"-": the loader's list of [upstream] or [[upstream]]
	if !reflect.DeepEqual(decoded, loaded) {
		t.Fatalf("toml.Decode gives\n%+v\nLoadConfig gives\n%+v", decoded, loaded)
	}
}

// TestEveryProblemIsReportedNotJustTheFirst: one run of check-config shows
// all that is wrong, in line order.
func TestEveryProblemIsReportedNotJustTheFirst(t *testing.T) {
	_, err := ParseConfig("imapgate.toml", []byte(`
[[listen]]
address = "0.0.0.0:993"
tls = "ssl"

[tls]
cert_file = "testdata/config/files/cert.pem"

[upstream]
address = "mail.internal:143"
tls = "startls"

[policy]
idle_timeout = "5 minutes"
`))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	want := []Problem{
		{4, "listen[0].tls", `"ssl" is not one of implicit, starttls`},
		{7, "tls.cert_file", "is set without tls.key_file"},
		{11, "upstream.tls", `"startls" is not one of none, starttls, implicit`},
		{14, "policy.idle_timeout", `"5 minutes" is not a duration (use Go durations like "90s", "31m")`},
	}
	if !reflect.DeepEqual(ce.Problems, want) {
		t.Fatalf("problems\n got %+v\nwant %+v", ce.Problems, want)
	}
	if ce.Path != "imapgate.toml" || !strings.HasPrefix(err.Error(), "imapgate.toml:4: listen[0].tls: \"ssl\"") || strings.Count(err.Error(), "\n") != 3 {
		t.Fatalf("Error() = %q", err.Error())
	}
}

// TestLoadConfigReadsTheFile: LoadConfig is ReadFile + ParseConfig, and a
// missing config file is the os error, not a ConfigError.
func TestLoadConfigReadsTheFile(t *testing.T) {
	c, err := LoadConfig("testdata/config/good-minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != "testdata/config/good-minimal.toml" {
		t.Errorf("Path() = %q", c.Path())
	}
	_, err = LoadConfig("testdata/config/no-such-file.toml")
	var ce *ConfigError
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &ce) {
		t.Fatalf("LoadConfig(missing) = %T %v", err, err)
	}
	_, err = LoadConfig("testdata/config/bad-enums.toml")
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "testdata/config/bad-enums.toml:3: listen[0].tls: ") {
		t.Fatalf("LoadConfig(bad) = %v", err)
	}
}

// TestFileChecksCanBeSkipped: a missing file is a problem for ParseConfig
// (check-config) and none for parseConfig(..., false).
func TestFileChecksCanBeSkipped(t *testing.T) {
	data := []byte(`
[[listen]]
address = ":993"
[tls]
cert_file = "/nonexistent/imapgate/cert.pem"
key_file = "/nonexistent/imapgate/key.pem"
[upstream]
address = "mail.internal:143"
`)
	_, err := ParseConfig("imapgate.toml", data)
	want := "imapgate.toml:5: tls.cert_file: open /nonexistent/imapgate/cert.pem: no such file or directory\n" +
		"imapgate.toml:6: tls.key_file: open /nonexistent/imapgate/key.pem: no such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("ParseConfig = %v, want\n%s", err, want)
	}
	if _, err := parseConfig("imapgate.toml", data, false); err != nil {
		t.Fatalf("parseConfig without file checks: %v", err)
	}
}

func TestEffectiveMinVersion(t *testing.T) {
	c := mustParse(t, "testdata/config/warn-doubtful-settings.toml")
	if got := c.Listen[0].EffectiveMinVersion(c); got != "1.2" {
		t.Errorf("listen[0] without its own min_version: %q, want tls.min_version 1.2", got)
	}
	if got := c.Listen[2].EffectiveMinVersion(c); got != "1.0" {
		t.Errorf("listen[2] with min_version 1.0: %q", got)
	}
	if got := c.Listen[1].EffectiveMinVersion(c); got != "1.1" {
		t.Errorf("listen[1] with min_version 1.1: %q", got)
	}
}

func TestDurationText(t *testing.T) {
	for text, want := range map[string]time.Duration{"90s": 90 * time.Second, "31m": 31 * time.Minute, "1h30m": 90 * time.Minute, "0s": 0, "0": 0} {
		var d Duration
		if err := d.UnmarshalText([]byte(text)); err != nil || d.Duration != want {
			t.Errorf("%q: %v, %v", text, d, err)
		}
	}
	for text, want := range map[string]string{
		"5 minutes": `"5 minutes" is not a duration (use Go durations like "90s", "31m")`,
		"10":        `"10" is not a duration (use Go durations like "90s", "31m")`,
		"-1s":       `"-1s" is negative`,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(text)); err == nil || err.Error() != want {
			t.Errorf("%q: err = %v, want %s", text, err, want)
		}
	}
	if b, _ := (Duration{31 * time.Minute}).MarshalText(); string(b) != "31m0s" {
		t.Errorf("MarshalText = %q", b)
	}
}

// TestKeyLines: findKeyLines finds the line of each key however it is
// written, and is not fooled by strings and comments that look like keys.
func TestKeyLines(t *testing.T) {
	src := "\xef\xbb\xbf" + `# comment = 1
top = 1 # trailing = comment
[[listen]]
address = ":993"
[listen.sub]
x = 1
[[listen]]
  "address" = ':143'
[tls]
acme.domains = [
  "a.example.com", # comment, with = and ]
  "b.example.com",
]
[[tls.certificate]]
cert_file = """
fake = "not a key"
"""
key_file = '''x'''
[upstream . "odd.key"]
'a b' = { c = 1, d = [1, 2], e = { f = "}" } }
[policy]
list = [[1, 2], [3]]
after = "x"
empty = [
  [],
]
`
	got := findKeyLines([]byte(src))
	want := map[string]int{
		"top":                           2,
		"listen":                        3,
		"listen[0]":                     3,
		"listen[0].address":             4,
		"listen[0].sub":                 5,
		"listen[0].sub.x":               6,
		"listen[1]":                     7,
		"listen[1].address":             8,
		"tls":                           9,
		"tls.acme":                      10,
		"tls.acme.domains":              10,
		"tls.acme.domains[0]":           11,
		"tls.acme.domains[1]":           12,
		"tls.certificate":               14,
		"tls.certificate[0]":            14,
		"tls.certificate[0].cert_file":  15,
		"tls.certificate[0].key_file":   18,
		"upstream":                      19,
		`upstream."odd.key"`:            19,
		`upstream."odd.key"."a b"`:      20,
		`upstream."odd.key"."a b".c`:    20,
		`upstream."odd.key"."a b".d[1]`: 20,
		`upstream."odd.key"."a b".e.f`:  20,
		"policy":                        21,
		"policy.list[1]":                22,
		"policy.list[1][0]":             22,
		"policy.after":                  23,
		"policy.empty[0]":               24, // an empty array has no place of its own: its key's line
	}
	for key, line := range want {
		if got[key].line != line {
			t.Errorf("%s: line %d, want %d", key, got[key].line, line)
		}
	}
	for key := range got {
		if strings.Contains(key, "fake") || strings.Contains(key, "comment") || strings.Contains(key, "trailing") {
			t.Errorf("findKeyLines took %q for a key", key)
		}
	}
}

// TestUnknownKeyHints: a typo gets the nearest name, a misplaced key the
// table it belongs in, and anything else no guess.
func TestUnknownKeyHints(t *testing.T) {
	known := []string{"address", "tls", "proxy_protocol", "min_version"}
	for name, want := range map[string]string{
		"adress": "address", "Address": "address", "addresss": "address", "proxy-protocol": "proxy_protocol",
		"tsl": "", "minversion": "min_version", "color": "", "x": "",
	} {
		if got := closest(name, known); got != want {
			t.Errorf("closest(%q) = %q, want %q", name, got, want)
		}
	}
}

func mustParse(t *testing.T, file string) *Config {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig("imapgate.toml", data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

// addConfigSeeds gives a fuzz target every test config and a few odd
// TOML spellings.
func addConfigSeeds(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/config/*.toml")
	seeds = append(seeds, "imapgate.example.toml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`a = [{b = """x"""}, {c = '''y'''}]`))
	f.Add([]byte("[[a]]\n[a.b]\n[[a.b.c]]\n\"q\\\"\" = 1"))
	f.Add([]byte("a = [\n  [],\n  [[1]],\n  {b = 2},\n]\r\n[c]\r\nd.e = 1\r\n"))
}

// FuzzKeyLines: no input makes findKeyLines panic or hang, and every line
// it gives is inside the file.
func FuzzKeyLines(f *testing.F) {
	addConfigSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := strings.Count(string(data), "\n") + 1
		for key, l := range findKeyLines(data) {
			if l.line < 1 || l.line > lines {
				t.Fatalf("%s: line %d in a file of %d lines", key, l.line, lines)
			}
		}
	})
}

// FuzzParseConfig: no input makes the loader panic or hang, and every
// problem it reports has a key and a line inside the file.
func FuzzParseConfig(f *testing.F) {
	addConfigSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig("f.toml", data, false)
		if err == nil {
			if len(c.Listen) == 0 || len(c.Upstream.AddressList()) == 0 {
				t.Fatalf("loaded without a listener or upstream: %+v", c)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("error %T %v", err, err)
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range ce.Problems {
			if p.Key == "" || p.Msg == "" || p.Line < 0 || p.Line > lines {
				t.Fatalf("problem %+v in a file of %d lines", p, lines)
			}
		}
	})
}
