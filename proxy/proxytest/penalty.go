package proxytest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Penalties asks the running Dovecot's anvil for its per-IP auth
// penalties ("doveadm penalty", Dovecot 2.3) and returns them by client
// address: the count of recent failures Dovecot holds against each
// address, the one it delays that address's next logins by. Only a
// Dovecot with DovecotOptions.AuthPenalty keeps any; an address without
// failures is absent.
func (d *Dovecot) Penalties() (map[string]int, error) {
	bin, err := exec.LookPath("doveadm")
	if err != nil {
		bin = "/usr/bin/doveadm"
	}
	out, err := exec.Command(bin, "-c", filepath.Join(d.Dir, "dovecot.conf"), "penalty").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("proxytest: doveadm penalty: %v: %s", err, out)
	}
	// IP                                         penalty last_penalty        last_update
	// 127.0.0.78                                       1 2026-12-01 13:01:02 13:01:02
	penalties := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "IP" {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("proxytest: doveadm penalty: line %q", line)
		}
		penalties[f[0]] = n
	}
	return penalties, nil
}
