package credstore

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// onDisk reads id's record as the database file holds it now, through a
// copy of the file, as a process starting after a crash would.
func onDisk(t *testing.T, s *testStore, id string) *record {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{s.path, s.path + ".key"} {
		copyFile(t, name, filepath.Join(dir, filepath.Base(name)))
	}
	db, err := bolt.Open(filepath.Join(dir, filepath.Base(s.path)), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var r *record
	if err := db.View(func(tx *bolt.Tx) (err error) { r, err = getRecord(tx, []byte(id)); return err }); err != nil {
		t.Fatal(err)
	}
	return r
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

func TestLastUseIsWrittenInBatchesAndACrashLosesOnlyTheBatch(t *testing.T) {
	s := openTestStore(t, func(o *Options) { o.FlushEvery = time.Hour })
	phone, ps := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	laptop, ls := s.add(t, NewAppPassword{User: "alice", Label: "laptop"})

	// The phone logs in; the write comes later, but listings show it.
	if _, err := s.verify("alice", ps.Reveal(), ""); err != nil {
		t.Fatal(err)
	}
	if r := onDisk(t, s, phone.ID); !r.LastUsed.IsZero() {
		t.Fatalf("a login was written at once: %+v", r)
	}
	l, _ := s.ListAppPasswords(context.Background(), "alice")
	if got := byID(l, phone.ID); !got.LastUsed.Equal(s.clock.Now()) || got.LastAddr != testAddr {
		t.Fatalf("the list does not show the pending use: %+v", got)
	}

	// A flush writes it.
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	flushedAt := s.clock.Now()
	if r := onDisk(t, s, phone.ID); !r.LastUsed.Equal(flushedAt) || r.LastAddr != testAddr {
		t.Fatalf("after Flush, on disk: %+v", r)
	}

	// Later uses, then a crash before the next flush: the copy taken now
	// is what a restarted process finds. It has lost these uses and
	// nothing else.
	s.clock.Advance(time.Minute)
	s.VerifyAppPassword(context.Background(), AppPasswordAttempt{User: "alice", Password: ps.Reveal(), Addr: netip.MustParseAddr("2001:db8::9")})
	s.verify("alice", ls.Reveal(), "")
	crashed := onDisk(t, s, phone.ID)
	if !crashed.LastUsed.Equal(flushedAt) || crashed.LastAddr != testAddr {
		t.Fatalf("after the crash, the phone's last use is %v from %v; want the flushed %v", crashed.LastUsed, crashed.LastAddr, flushedAt)
	}
	if r := onDisk(t, s, laptop.ID); r == nil || !r.LastUsed.IsZero() {
		t.Fatalf("after the crash, the laptop: %+v; want it there, never used", r)
	}

	// Without the crash, Close writes them.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := onDisk(t, s, phone.ID); !r.LastUsed.Equal(s.clock.Now()) || r.LastAddr != netip.MustParseAddr("2001:db8::9") {
		t.Fatalf("after Close, the phone: %+v", r)
	}
}

func TestPendingUsesAreBoundedAndAFullBatchIsWrittenAtOnce(t *testing.T) {
	s := openTestStore(t, func(o *Options) { o.FlushEvery = time.Hour; o.MaxPendingUses = 2 })
	var ids []string
	for _, label := range []string{"a", "b"} {
		p, secret := s.add(t, NewAppPassword{User: "alice", Label: label})
		ids = append(ids, p.ID)
		if _, err := s.verify("alice", secret.Reveal(), ""); err != nil {
			t.Fatal(err)
		}
	}
	// Two pending uses fill the batch: the writer starts without waiting
	// for the hour. Await it through the file.
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for onDisk(t, s, id).LastUsed.IsZero() {
			if time.Now().After(deadline) {
				t.Fatalf("a full batch was not written within 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// However many credentials log in, memory holds at most the bound.
	for i := range 50 {
		s.RecordUse(newID(), testAddr)
		if n := s.pendingCount(); n > 2 {
			t.Fatalf("after %d uses, %d pending; the bound is 2", i+1, n)
		}
	}
}

func TestRevokedCredentialsUseIsNotWrittenBack(t *testing.T) {
	s := openTestStore(t, func(o *Options) { o.FlushEvery = time.Hour })
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	if _, err := s.verify("alice", secret.Reveal(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	s.RecordUse(p.ID, testAddr) // a SCRAM conversation that ended after the revocation
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := onDisk(t, s, p.ID); r.Revoked.IsZero() || !r.LastUsed.IsZero() || r.SCRAM != nil {
		t.Fatalf("tombstone: %+v; want revoked, no use written, no SCRAM keys", r)
	}
}

func byID(l []AppPassword, id string) AppPassword {
	for _, p := range l {
		if p.ID == id {
			return p
		}
	}
	return AppPassword{}
}

func (s *testStore) pendingCount() int {
	s.uses.mu.Lock()
	defer s.uses.mu.Unlock()
	return len(s.uses.m)
}
