package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
