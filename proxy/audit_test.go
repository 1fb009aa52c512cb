package proxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestUserHashMode: with a key, the user name never reaches the sink; the
// hash is stable per user and key, the caller's event is unchanged, and
// the observer still sees the name (for nothing but counters).
func TestUserHashMode(t *testing.T) {
	var b bytes.Buffer
	a := NewAuditor(&b, nil)
	var observed []string
	a.SetObserver(func(e *Event) { observed = append(observed, e.User) })
	key := []byte("0123456789abcdef0123456789abcdef")
	a.SetUserKey(key)
	ev := &Event{Event: EventAuth, User: "alice@example.com", Result: ResultSuccess}
	a.Log(ev)
	a.Log(&Event{Event: EventSessionEnd, User: ev.User})
	a.SetUserKey(nil)
	a.Log(&Event{Event: EventAuth, User: "alice@example.com"})
	if ev.User != "alice@example.com" || ev.UserHash != "" {
		t.Fatalf("Log changed the caller's event: %+v", ev)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := HashUser(key, "alice@example.com")
	if len(want) != 64 || want == HashUser([]byte("another key, also 32 bytes long!"), "alice@example.com") {
		t.Fatalf("HashUser = %q", want)
	}
	for i, line := range lines[:2] {
		var e Event
		json.Unmarshal([]byte(line), &e)
		if e.User != "" || e.UserHash != want || strings.Contains(line, "alice") {
			t.Errorf("line %d: %s", i, line)
		}
	}
	if !strings.Contains(lines[2], `"user":"alice@example.com"`) || strings.Contains(lines[2], "user_hash") {
		t.Errorf("with the key removed: %s", lines[2])
	}
	if len(observed) != 3 || observed[0] != "alice@example.com" {
		t.Errorf("observer saw %q", observed)
	}
}
