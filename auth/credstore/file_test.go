package credstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFirstUseCreatesPrivateFiles(t *testing.T) {
	// With umask 0, what is created is exactly the mode asked for.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	root := t.TempDir()
	path := filepath.Join(root, "var", "imapgate", "credentials.db")
	s := reopenTestStore(t, path, newClock(), nil)
	s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	for _, tc := range []struct {
		path string
		want fs.FileMode
	}{
		{filepath.Join(root, "var", "imapgate"), 0o700 | fs.ModeDir},
		{path, 0o600},
		{path + ".key", 0o600},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.want {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.want)
		}
	}
	key, err := os.ReadFile(path + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if k, err := ParseServerKey(key); err != nil || len(k) != ServerKeySize {
		t.Fatalf("key file %q: %v", key, err)
	}
}

func TestFilesOthersCanReadAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		chmod func(dir, db, key string) error
		path  func(dir, db, key string) string // named in the error
		fix   string
	}{
		{
			"group-readable database",
			func(_, db, _ string) error { return os.Chmod(db, 0o640) },
			func(_, db, _ string) string { return db }, "chmod 600",
		},
		{
			"world-readable key file",
			func(_, _, key string) error { return os.Chmod(key, 0o644) },
			func(_, _, key string) string { return key }, "chmod 600",
		},
		{
			"group-writable directory",
			func(dir, _, _ string) error { return os.Chmod(dir, 0o770) },
			func(dir, _, _ string) string { return dir }, "chmod 700",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, nil)
			s.add(t, NewAppPassword{User: "alice", Label: "phone"})
			s.Close()
			dir, db, key := filepath.Dir(s.path), s.path, s.path+".key"
			if err := tc.chmod(dir, db, key); err != nil {
				t.Fatal(err)
			}
			_, err := OpenBolt(s.path, Options{})
			if !errors.Is(err, ErrInsecureFile) {
				t.Fatalf("OpenBolt: %v, want ErrInsecureFile", err)
			}
			if p := tc.path(dir, db, key); !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.fix+" "+p) {
				t.Fatalf("error %q does not name %s and the fix %q", err, p, tc.fix)
			}
		})
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone", Scope: []string{"imaps"}, Expires: s.clock.Now().Add(time.Hour)})
	revoked, rs := s.add(t, NewAppPassword{User: "alice", Label: "old"})
	if _, err := s.Revoke(context.Background(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	cert, _ := newCert(t, "alice's laptop", nil)
	c, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "laptop", Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.verify("alice", secret.Reveal(), "imaps"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.ListAppPasswords(context.Background(), "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = reopenTestStore(t, s.path, s.clock, nil)
	after, _ := s.ListAppPasswords(context.Background(), "")
	if len(after) != 1 || len(before) != 1 || after[0].ID != before[0].ID || !after[0].LastUsed.Equal(before[0].LastUsed) ||
		after[0].LastAddr != testAddr || !after[0].Expires.Equal(p.Expires) || after[0].Scope[0] != "imaps" {
		t.Fatalf("after reopen: %+v, before: %+v", after, before)
	}
	if _, err := s.verify("alice", secret.Reveal(), "imaps"); err != nil {
		t.Fatalf("verify after reopen: %v", err)
	}
	if ok, _, err := scramLogin(t, s, p.SCRAMLogin(), secret.Reveal(), "imaps"); !ok {
		t.Fatalf("SCRAM after reopen: %v", err)
	}
	if _, err := s.verify("alice", rs.Reveal(), ""); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked after reopen: %v, want ErrRevoked", err)
	}
	if got, err := s.VerifyClientCert(context.Background(), SPKIFingerprint(cert), testAddr); err != nil || got.ID != c.ID {
		t.Fatalf("certificate after reopen: %+v, %v", got, err)
	}
}

func TestSecondOpenFailsFastWithLockedError(t *testing.T) {
	s := openTestStore(t, nil)
	start := time.Now()
	_, err := OpenBolt(s.path, Options{LockTimeout: 200 * time.Millisecond})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	for _, want := range []string{s.path, "in use by another process", "admin socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if elapsed > 2*time.Second {
		t.Fatalf("second open took %v with a 200ms lock timeout", elapsed)
	}
	// The first is still fine, and once it is closed the file opens.
	s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	s.Close()
	reopenTestStore(t, s.path, s.clock, nil)
}

func TestKeyFileMustBelongToTheDatabase(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	s.Close()
	key := s.path + ".key"

	// Missing: refused, not replaced by a new key that would silently
	// make every password unknown.
	if err := os.Rename(key, key+".bak"); err != nil {
		t.Fatal(err)
	}
	_, err := OpenBolt(s.path, Options{})
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing key file: %v, want ErrWrongKey naming %s", err, key)
	}
	if _, err := os.Stat(key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a new key file was created: %v", err)
	}

	// Another store's key: refused.
	other := openTestStore(t, nil)
	other.Close()
	_, err = OpenBolt(s.path, Options{KeyFile: other.path + ".key"})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another store's key file: %v, want ErrWrongKey", err)
	}

	// Not a key at all.
	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(bad, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(s.path, Options{KeyFile: bad}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("a key file without a key: %v", err)
	}

	// The right key, kept elsewhere: all is there.
	s = reopenTestStore(t, s.path, s.clock, func(o *Options) { o.KeyFile = key + ".bak" })
	if got, err := s.verify("alice", secret.Reveal(), ""); err != nil || got.ID != p.ID {
		t.Fatalf("with the key file moved: %+v, %v", got, err)
	}
}

func TestParseServerKey(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{strings.Repeat("ab", 32) + "\n", true},
		{strings.Repeat("ab", 32), true},
		{strings.Repeat("ab", 64) + "\n", true},
		{strings.Repeat("ab", 31) + "\n", false},
		{strings.Repeat("zz", 32), false},
		{"", false},
		{strings.Repeat("ab", 32) + "\n\n", false},
	} {
		if _, err := ParseServerKey([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("ParseServerKey(%q): %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func FuzzParseServerKey(f *testing.F) {
	f.Add([]byte(strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParseServerKey(data)
		if err == nil && len(key) < ServerKeySize {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		if err != nil {
			return
		}
		again, err := ParseServerKey([]byte(hex.EncodeToString(key) + "\n"))
		if err != nil || !bytes.Equal(again, key) {
			t.Fatalf("the key written back reads %x, %v; want %x", again, err, key)
		}
	})
}
