package credstore

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkVerifyAppPassword is one PLAIN login's CPU in the store, with
// the user holding 1 or 1,000 app passwords: the two must be flat.
func BenchmarkVerifyAppPassword(b *testing.B) {
	for _, stored := range []int{1, 1000} {
		b.Run(fmt.Sprintf("stored=%d", stored), func(b *testing.B) {
			s := openTestStore(b, nil)
			s.fill(b, "alice", stored-1)
			_, secret := s.add(b, NewAppPassword{User: "alice", Label: "phone"})
			typed := secret.Reveal()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.verify("alice", typed, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyWrongAppPassword is a guess's cost: the same as a login's.
func BenchmarkVerifyWrongAppPassword(b *testing.B) {
	s := openTestStore(b, nil)
	s.fill(b, "alice", 999)
	guess := formatSecret(canonicalExample)
	b.ReportAllocs()
	for b.Loop() {
		s.verify("alice", guess, "")
	}
}

// BenchmarkLookupSCRAM is the store's part of a SCRAM login: the lookup
// and unsealing of the keys (the conversation's own HMACs come on top).
func BenchmarkLookupSCRAM(b *testing.B) {
	s := openTestStore(b, nil)
	p, _ := s.add(b, NewAppPassword{User: "alice", Label: "mbsync"})
	login := p.SCRAMLogin()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.LookupSCRAM(context.Background(), login, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyClientCert is EXTERNAL's lookup after the handshake.
func BenchmarkVerifyClientCert(b *testing.B) {
	s := openTestStore(b, nil)
	cert, _ := newCert(b, "laptop", nil)
	if _, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "laptop", Certificate: cert}); err != nil {
		b.Fatal(err)
	}
	fp := SPKIFingerprint(cert)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.VerifyClientCert(context.Background(), fp, testAddr); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddAppPassword is one add: generation, the SCRAM keys' PBKDF2
// (4096 iterations), and a durable write (an fsync).
func BenchmarkAddAppPassword(b *testing.B) {
	s := openTestStore(b, nil)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		s.add(b, NewAppPassword{User: "alice", Label: fmt.Sprintf("device %d", i)})
	}
}
