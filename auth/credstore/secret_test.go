package credstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

const canonicalExample = "k3f9x2ab7hmqpr4stuvwyz5c6d8e" // 28 symbols of Alphabet

func TestAlphabetHas32SymbolsWithoutLookAlikes(t *testing.T) {
	if len(Alphabet) != 32 {
		t.Fatalf("Alphabet has %d symbols, want 32", len(Alphabet))
	}
	for _, c := range "01lo" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		if strings.ContainsRune(Alphabet, c) {
			t.Errorf("Alphabet holds %q", c)
		}
	}
	seen := map[rune]bool{}
	for _, c := range Alphabet {
		if seen[c] {
			t.Errorf("Alphabet repeats %q", c)
		}
		seen[c] = true
	}
	if PasswordSymbols*5 < 128 {
		t.Errorf("%d symbols carry %d bits, want at least 128", PasswordSymbols, PasswordSymbols*5)
	}
}

func TestGeneratedPasswordsArePrintedInGroupsOfFour(t *testing.T) {
	form := regexp.MustCompile(`^[` + Alphabet + `]{4}(-[` + Alphabet + `]{4}){6}$`)
	seen := map[string]bool{}
	for range 200 {
		canonical, s := newSecret()
		if !form.MatchString(s.Reveal()) {
			t.Fatalf("generated %q, want 7 groups of 4 symbols joined by '-'", s.Reveal())
		}
		if got, ok := NormalizeAppPassword(s.Reveal()); !ok || got != canonical {
			t.Fatalf("NormalizeAppPassword(%q) = %q, %v; want %q", s.Reveal(), got, ok, canonical)
		}
		if seen[canonical] {
			t.Fatalf("generated %q twice", canonical)
		}
		seen[canonical] = true
	}
}

func TestNormalizeAppPasswordForgivesCaseAndSeparators(t *testing.T) {
	printed := formatSecret(canonicalExample)
	for _, tc := range []struct {
		name  string
		typed string
		ok    bool
	}{
		{"as printed", printed, true},
		{"without dashes", canonicalExample, true},
		{"upper case", strings.ToUpper(printed), true},
		{"spaces instead of dashes", strings.ReplaceAll(printed, "-", " "), true},
		{"groups of eight", "k3f9x2ab-7hmqpr4s-tuvwyz5c-6d8e", true},
		{"surrounding spaces", "  " + printed + " \n", true},
		{"phone en dash and no-break space", strings.Replace(strings.Replace(printed, "-", "\u2013", 1), "-", "\u00a0", 1), true},
		{"doubled separators", strings.ReplaceAll(printed, "-", "--"), true},
		{"one symbol short", canonicalExample[1:], false},
		{"one symbol more", canonicalExample + "a", false},
		{"zero is not a symbol", "0" + canonicalExample[1:], false},
		{"letter o is not a symbol", "o" + canonicalExample[1:], false},
		{"one is not a symbol", "1" + canonicalExample[1:], false},
		{"letter l is not a symbol", "l" + canonicalExample[1:], false},
		{"punctuation", "k3f9." + canonicalExample[4:], false},
		{"non-ASCII letter", "ä" + canonicalExample[1:], false},
		{"empty", "", false},
		{"only separators", "---- ----", false},
		{"a real password", "Winter2026!", false},
		{"very long", strings.Repeat("-", 300) + canonicalExample, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NormalizeAppPassword(tc.typed)
			if ok != tc.ok {
				t.Fatalf("NormalizeAppPassword(%q) ok = %v, want %v", tc.typed, ok, tc.ok)
			}
			if ok && got != canonicalExample {
				t.Fatalf("NormalizeAppPassword(%q) = %q, want %q", tc.typed, got, canonicalExample)
			}
		})
	}
}

func FuzzNormalizeAppPassword(f *testing.F) {
	for _, s := range []string{formatSecret(canonicalExample), canonicalExample, strings.ToUpper(canonicalExample), "", "----", "k3f9\u2013x2ab", "0o1l"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, typed string) {
		got, ok := NormalizeAppPassword(typed)
		if !ok {
			if got != "" {
				t.Fatalf("not ok but returned %q", got)
			}
			return
		}
		if len(got) != PasswordSymbols {
			t.Fatalf("%q normalises to %q: %d symbols, want %d", typed, got, len(got), PasswordSymbols)
		}
		for _, c := range got {
			if !strings.ContainsRune(Alphabet, c) {
				t.Fatalf("%q normalises to %q, with %q outside the alphabet", typed, got, c)
			}
		}
		// The printed form, and the result itself, normalise to the same.
		for _, again := range []string{got, formatSecret(got)} {
			if g, ok := NormalizeAppPassword(again); !ok || g != got {
				t.Fatalf("NormalizeAppPassword(%q) = %q, %v; want %q", again, g, ok, got)
			}
		}
		// What was typed is the result plus case and separators: its
		// ASCII letters and digits, lower-cased, are the result.
		kept := strings.Map(func(r rune) rune {
			switch {
			case 'A' <= r && r <= 'Z':
				return r + 'a' - 'A'
			case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
				return r
			}
			return -1
		}, typed)
		if kept != got {
			t.Fatalf("%q normalises to %q, but its symbols are %q", typed, got, kept)
		}
	})
}

func TestSplitSCRAMLogin(t *testing.T) {
	for _, tc := range []struct {
		login, user, id string
		ok              bool
	}{
		{"alice#k3f9x2ab", "alice", "k3f9x2ab", true},
		{"alice@example.com#k3f9x2ab", "alice@example.com", "k3f9x2ab", true},
		{"odd#name#k3f9x2ab", "odd#name", "k3f9x2ab", true},
		{"alice", "", "", false},
		{"#k3f9x2ab", "", "", false},
		{"alice#", "", "", false},
		{"alice#k3f9x2a", "", "", false},   // 7 symbols
		{"alice#k3f9x2abc", "", "", false}, // 9
		{"alice#K3F9X2AB", "", "", false},  // IDs are lower case
		{"alice#k3f9x2a0", "", "", false},  // 0 is not a symbol
		{"alice#k3f9x2ab#", "", "", false},
	} {
		user, id, ok := SplitSCRAMLogin(tc.login)
		if user != tc.user || id != tc.id || ok != tc.ok {
			t.Errorf("SplitSCRAMLogin(%q) = %q, %q, %v; want %q, %q, %v", tc.login, user, id, ok, tc.user, tc.id, tc.ok)
		}
		if tc.ok && SCRAMLogin(user, id) != tc.login {
			t.Errorf("SCRAMLogin(%q, %q) = %q, want %q", user, id, SCRAMLogin(user, id), tc.login)
		}
	}
}

func FuzzSplitSCRAMLogin(f *testing.F) {
	f.Add("alice#k3f9x2ab")
	f.Add("a#b#k3f9x2ab")
	f.Add("#")
	f.Fuzz(func(t *testing.T, login string) {
		user, id, ok := SplitSCRAMLogin(login)
		if !ok {
			return
		}
		if user == "" || !validID(id) || SCRAMLogin(user, id) != login {
			t.Fatalf("SplitSCRAMLogin(%q) = %q, %q: does not rebuild the login", login, user, id)
		}
	})
}

func TestSecretNeverPrintsItself(t *testing.T) {
	_, s := newSecret()
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("added", "secret", s, "in", struct{ S Secret }{s})
	js, err := json.Marshal(struct{ S Secret }{s})
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v %s %q %x %+v %#v %v", s, s, s, s, s, s, struct{ S Secret }{s}) + logged.String() + string(js)
	for _, leak := range []string{s.Reveal(), strings.ReplaceAll(s.Reveal(), "-", ""), s.Reveal()[:9]} {
		if strings.Contains(out, leak) {
			t.Fatalf("the password shows in %s", out)
		}
	}
	if !strings.Contains(out, "[redacted]") {
		t.Fatalf("no [redacted] in %s", out)
	}
}

// TestSCRAMCredentialNeverPrintsItsKeys: the keys LookupSCRAM returns
// open the mailbox to whoever holds them; no fmt verb and no log shows them.
func TestSCRAMCredentialNeverPrintsItsKeys(t *testing.T) {
	c := SCRAMCredential{AppPassword: AppPassword{ID: "abcd2345", User: "alice", Label: "phone"}}
	c.Keys.Salt = "salt-SECRET"
	c.Keys.StoredKey = []byte("stored-SECRET")
	c.Keys.ServerKey = []byte("server-SECRET")
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("found", "credential", c)
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%x", c), logged.String()} {
		if strings.Contains(s, "SECRET") || strings.Contains(s, fmt.Sprintf("%x", "stored-SECRET")) || !strings.Contains(s, "abcd2345") {
			t.Errorf("printed as %s", s)
		}
	}
}
