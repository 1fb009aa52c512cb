package tlsconf

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestOnDemandAllowList(t *testing.T) {
	p := &OnDemandPolicy{Allow: []string{"mail.example.org", ".customers.example.net", "*.example.com"}}
	tests := []struct {
		name string
		want bool
	}{
		{"mail.example.org", true},
		{"MAIL.example.org.", true},
		{"x.mail.example.org", false},
		{"example.org", false},
		{"a.customers.example.net", true},
		{"a.b.customers.example.net", true},
		{"customers.example.net", false},
		{"evilcustomers.example.net", false},
		{"imap.example.com", true},
		{"example.com", false},
		{"", false},
		{"*.example.com", false},
		{"a.example.com.evil.org", false},
	}
	for _, tt := range tests {
		if got := p.Allowed(tt.name); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOnDemandCapCountsEachNameOncePerHour(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &OnDemandPolicy{Allow: []string{".example.com"}, MaxPerHour: 2, now: func() time.Time { return now }}
	for i, step := range []struct {
		name string
		want error
	}{
		{"a.example.com", nil},
		{"a.example.com", nil}, // the same name again: no new count
		{"b.example.com", nil},
		{"c.example.com", ErrOnDemandCap},
		{"evil.org", ErrOnDemandNotAllowed},
	} {
		if err := p.Decide(step.name); !errors.Is(err, step.want) {
			t.Fatalf("step %d: Decide(%q) = %v, want %v", i, step.name, err, step.want)
		}
	}
	now = now.Add(time.Hour)
	if err := p.Decide("c.example.com"); err != nil {
		t.Fatalf("an hour later: %v", err)
	}
}

func TestOnDemandDefaultCap(t *testing.T) {
	p := &OnDemandPolicy{Allow: []string{".example.com"}}
	for i := range DefaultOnDemandPerHour {
		if err := p.Decide(fmt.Sprintf("n%d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Decide("one-more.example.com"); !errors.Is(err, ErrOnDemandCap) {
		t.Fatalf("past the default cap: %v", err)
	}
}
