package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/tlsconf"
)

// TestSystemdUnitSandboxing: the shipped unit keeps the protections the
// README promises, and, where systemd-analyze exists, systemd accepts it
// with the freshly built binary in place.
func TestSystemdUnitSandboxing(t *testing.T) {
	data, err := os.ReadFile("deploy/imapgate.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, line := range []string{
		"User=imapgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=imapgate", "ProtectHome=yes", "PrivateTmp=yes",
		"PrivateDevices=yes", "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "ExecReload=/bin/kill -HUP $MAINPID",
	} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("imapgate.service lacks %q", line)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed: the unit's syntax is not verified")
	}
	bin := imapgateBinary(t)
	path := filepath.Join(t.TempDir(), "imapgate.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/imapgate", bin)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdStateDirectoryHoldsTheDefaultACMEStorage: under the shipped
// unit, ACME with the default storage starts. systemd creates the unit's
// StateDirectory (/var/lib/<name>, the default [tls.acme] storage) with
// exactly StateDirectoryMode, whatever the umask; the ACME file storage,
// which holds private keys, must accept the directory systemd made.
func TestSystemdStateDirectoryHoldsTheDefaultACMEStorage(t *testing.T) {
	data, err := os.ReadFile("deploy/imapgate.service")
	if err != nil {
		t.Fatal(err)
	}
	service := unitSection(string(data), "Service")
	name, modeText := service["StateDirectory"], service["StateDirectoryMode"]
	if name == "" || modeText == "" {
		t.Fatalf("the unit sets StateDirectory=%q StateDirectoryMode=%q; both are needed", name, modeText)
	}
	mode, err := strconv.ParseUint(modeText, 8, 32)
	if err != nil {
		t.Fatalf("StateDirectoryMode=%s: %v", modeText, err)
	}

	cfgData, err := os.ReadFile("testdata/config/good-acme-tls-alpn.toml") // ACME with every default
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig("imapgate.toml", cfgData)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/var/lib/" + name; c.TLS.ACME.Storage != want {
		t.Fatalf("default [tls.acme] storage %q is not the unit's StateDirectory %s", c.TLS.ACME.Storage, want)
	}

	dir := filepath.Join(t.TempDir(), "var", "lib", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.FileStorage(dir); err != nil {
		t.Fatalf("a StateDirectory made with StateDirectoryMode=%s: %v", modeText, err)
	}
}

// unitSection returns the last value of each key in one [section] of a
// systemd unit (a later assignment of these keys replaces an earlier one).
func unitSection(unit, section string) map[string]string {
	out := map[string]string{}
	in := false
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			in = line == "["+section+"]"
		case in:
			if k, v, ok := strings.Cut(line, "="); ok {
				out[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	return out
}
