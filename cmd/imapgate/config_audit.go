package main

// The [audit] table: where the audit events go, and the user_hash key.

import (
	"bytes"
	"fmt"
	"os"
)

// AuditConfig is the [audit] table.
type AuditConfig struct {
	// Output is "stdout", "stderr" or a file path (appended to, created
	// 0640, reopened on SIGHUP).
	// Default: "stdout".
	Output string `toml:"output"`

	// UserHashKeyFile, when set, turns on user_hash mode: events carry
	// user_hash, the hex HMAC-SHA256 of the user name under the key in
	// this file (at least 32 bytes; surrounding whitespace is ignored),
	// instead of user.
	// Default: "" (user names in clear).
	UserHashKeyFile string `toml:"user_hash_key_file"`
}

// The audit.output words that are not a file path.
const (
	auditStdout = "stdout"
	auditStderr = "stderr"
)

// minUserHashKey is the shortest user_hash key accepted: 32 bytes, the
// HMAC-SHA256 block's worth of guessing an attacker must not be able to do.
const minUserHashKey = 32

func (d *decoder) audit(t *table, a *AuditConfig) {
	t.str("output", &a.Output)
	t.str("user_hash_key_file", &a.UserHashKeyFile)
	t.done()
	if a.Output == "" && t.ok("output") {
		t.problem("output", "is empty: write %q, %q or a file path", auditStdout, auditStderr)
	}
	t.userHashKey("user_hash_key_file", a.UserHashKeyFile)
}

// userHashKey checks the key file when the decoder checks files.
func (t *table) userHashKey(name, path string) {
	if path == "" || !t.d.checkFiles || t.quiet || !t.ok(name) {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.problem(name, "%s", err)
		return
	}
	if fi.IsDir() {
		t.problem(name, "%s is a directory, not a file", path)
		return
	}
	if _, err := loadUserHashKey(path); err != nil {
		t.problem(name, "%s", err)
	}
}

// readUserHashKey reads audit.user_hash_key_file; "" means no key.
func readUserHashKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	key, err := loadUserHashKey(path)
	if err != nil {
		return nil, fmt.Errorf("audit.user_hash_key_file: %w", err)
	}
	return key, nil
}

// loadUserHashKey reads the key in path and checks its length, for the
// config check and for the server alike.
func loadUserHashKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key := bytes.TrimSpace(data)
	if len(key) < minUserHashKey {
		return nil, fmt.Errorf("%s holds %d bytes; a key needs at least %d (for example: head -c 32 /dev/urandom | base64 > FILE)", path, len(key), minUserHashKey)
	}
	return key, nil
}
