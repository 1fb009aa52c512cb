package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func exampleUserNames(t testing.TB) *UserNames {
	t.Helper()
	u, err := NewUserNames("example.com", []string{"EXAMPLE", "example.local", "corp.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUserNamesKey(t *testing.T) {
	u := exampleUserNames(t)
	tests := []struct {
		name, want string
	}{
		// One mailbox, every spelling.
		{"jdoe", "jdoe@example.com"},
		{"JDoe@Example.com", "jdoe@example.com"},
		{"jdoe@example.local", "jdoe@example.com"},
		{"jdoe@CORP.example.com", "jdoe@example.com"},
		{`EXAMPLE\jdoe`, "jdoe@example.com"},
		{`example.local\JDOE`, "jdoe@example.com"},
		{`EXAMPLE\jdoe\shared`, "jdoe@example.com"}, // Exchange's DOMAIN\user\mailbox
		{`EXAMPLE\jdoe@example.local`, "jdoe@example.com"},
		{"  jdoe  ", "jdoe@example.com"},
		{"\tJDOE@EXAMPLE.COM\n", "jdoe@example.com"},
		// Empty parts count as none; space around a part is dropped.
		{`\jdoe`, "jdoe@example.com"},
		{`EXAMPLE\\jdoe`, "jdoe@example.com"},
		{`EXAMPLE\\\\jdoe`, "jdoe@example.com"},
		{"jdoe@", "jdoe@example.com"},
		{"jdoe @ example.com", "jdoe@example.com"},
		{`EXAMPLE\ jdoe`, "jdoe@example.com"},
		// Other domains, and names with no user part, stay as typed.
		{`OTHER\jdoe`, `other\jdoe`},
		{"jdoe@other.org", "jdoe@other.org"},
		{"jdoe@example.com.", "jdoe@example.com."},
		{"jdoe@sub.example.com", "jdoe@sub.example.com"},
		{`EXAMPLE\jdoe@other.org`, `example\jdoe@other.org`},
		{`OTHER\jdoe@example.com`, `other\jdoe@example.com`},
		{"@example.com", "@example.com"},
		{`EXAMPLE\`, `example\`},
		{`EXAMPLE\\`, `example\\`},
		{`\`, `\`},
		{"@", "@"},
		{"", ""},
		{"   ", ""},
		{`jdoe\`, `jdoe\`}, // "jdoe" is not a realm
		// Several @: the last one separates the domain.
		{"a@b@example.com", "a@b@example.com"},
		{"a@b@example.local", "a@b@example.com"},
		{"a@b@other.org", "a@b@other.org"},
		// Unicode simple case folding, in the domain too.
		{"ÄRGER@EXAMPLE.COM", "ärger@example.com"},
		{"jdoe@\u212Aexample.com", "jdoe@kexample.com"}, // another domain, folded (the Kelvin sign is k)
		{"\u212Aate", "kate@example.com"},               // the Kelvin sign is k
		{"\u017Fam", "sam@example.com"},                 // long s is s
		{"ΣΊΣΥΦΟΣ", "σίσυφοσ@example.com"},              // final sigma and sigma are one letter
		{"σίσυφος", "σίσυφοσ@example.com"},
		{"EXAMPLE\\J\u0130", "ji@example.com"},
		{"\xffjdoe", "\xffjdoe@example.com"}, // bytes that are not UTF-8 are kept
	}
	for _, tt := range tests {
		if got := u.Key(tt.name); got != tt.want {
			t.Errorf("Key(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if got := u.Key(u.Key(tt.name)); got != u.Key(tt.name) {
			t.Errorf("Key(Key(%q)) = %q, not a fixed point", tt.name, got)
		}
	}
}

func TestUserNamesWithoutDomainFoldOnly(t *testing.T) {
	u, err := NewUserNames("", nil)
	if err != nil {
		t.Fatal(err)
	}
	var zero UserNames
	for _, tt := range []struct{ name, want string }{
		{" Alice ", "alice"},
		{`EXAMPLE\JDoe`, `example\jdoe`},
		{"JDoe@Example.com", "jdoe@example.com"},
		{"jdoe@", "jdoe@"},
		{"\u212Aate", "kate"},
	} {
		for _, n := range []*UserNames{nil, &zero, u} {
			if got := n.Key(tt.name); got != tt.want {
				t.Errorf("%v.Key(%q) = %q, want %q", n, tt.name, got, tt.want)
			}
		}
		if got := NormalizeUser(tt.name); got != tt.want {
			t.Errorf("NormalizeUser(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestNewUserNamesRefusesBadDomains(t *testing.T) {
	for _, tt := range []struct {
		domain string
		realms []string
		want   string
	}{
		{"", []string{"EXAMPLE"}, "realms need a mail domain"},
		{"example.com", []string{""}, "is empty"},
		{"example.com", []string{"  "}, "is empty"},
		{"user@example.com", nil, `holds @`},
		{"example.com", []string{`EXAMPLE\`}, `holds \`},
		{"example com", nil, "space or control"},
		{"example.com", []string{"ex\x00ample"}, "space or control"},
		{"example.com", []string{"\xffexample"}, "UTF-8"},
	} {
		_, err := NewUserNames(tt.domain, tt.realms)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewUserNames(%q, %q) = %v, want an error with %q", tt.domain, tt.realms, err, tt.want)
		}
	}
}

// TestFoldRuneIsAFixedPointAndKeepsEqualFold: for every rune, folding
// twice is folding once, and the folded rune is one strings.EqualFold
// takes for the original (or its lower case).
func TestFoldRuneIsAFixedPointAndKeepsEqualFold(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		f := foldRune(r)
		if foldRune(f) != f {
			t.Fatalf("foldRune(%U) = %U, but foldRune(%U) = %U", r, f, f, foldRune(f))
		}
		if !strings.EqualFold(string(r), string(f)) && f != unicode.ToLower(r) {
			t.Fatalf("foldRune(%U) = %U, neither EqualFold nor its lower case", r, f)
		}
	}
}

// TestSpellingsOfOneMailboxSpendOneBudget: with the mail domain and its
// realms set, failures as JDoe@Example.com, EXAMPLE\jdoe and
// jdoe@example.local (a UPN) spend one user budget, and a success under
// one spelling makes the device known for the others.
func TestSpellingsOfOneMailboxSpendOneBudget(t *testing.T) {
	b := Budgets{PerUser: 3, PerDevice: 10}
	g, _ := newTestGuard(b)
	g.SetUserNames(exampleUserNames(t))
	spellings := []string{"JDoe@Example.com", `EXAMPLE\jdoe`, "jdoe@example.local"}
	for i, user := range spellings {
		if ok, d := try(g, fmt.Sprintf("10.%d.0.1", i), user, "guess"); !ok {
			t.Fatalf("guess %d as %q refused: %+v", i, user, d)
		}
	}
	for _, user := range append(spellings, "jdoe") {
		if ok, d := try(g, "10.9.0.1", user, "guess"); ok || d.Reason != ReasonUserLocked {
			t.Fatalf("after 3 failures under 3 spellings, a guess as %q got through: %+v", user, d)
		}
	}
	// Another user of the domain is untouched.
	if ok, _ := try(g, "10.9.0.1", "alice", "guess"); !ok {
		t.Fatal("another user was locked")
	}
	// A success from the office under one spelling makes the office a
	// known device for every spelling.
	g2, _ := newTestGuard(b)
	g2.SetUserNames(exampleUserNames(t))
	try(g2, "192.0.2.10", `EXAMPLE\JDOE`, "right")
	if _, d := try(g2, "192.0.2.11", "jdoe@example.com", "right"); !d.Known {
		t.Fatal("a success as EXAMPLE\\JDOE did not make the device known for jdoe@example.com")
	}
}

// TestUserNamesChangeKeepsAttemptsInFlightBalanced: an attempt settles
// under the key Check gave it, even if the normalisation changes (a
// reload) while it is in flight.
func TestUserNamesChangeKeepsAttemptsInFlightBalanced(t *testing.T) {
	m := &MemoryStore{}
	g, _ := newStoreGuard(m, testBudgets)
	ctx := context.Background()
	a := Attempt{Addr: netip.MustParseAddr("192.0.2.1"), User: "jdoe"}
	d1, d2 := g.Check(ctx, a), g.Check(ctx, a)
	g.SetUserNames(exampleUserNames(t))
	g.Cancel(ctx, a, d1)
	g.Success(ctx, a, d2)
	if n := m.Pending(); n != 0 {
		t.Fatalf("%d keys left pending after the normalisation changed", n)
	}
	if _, d := try(g, "192.0.2.2", "jdoe", "right"); d.Known {
		t.Fatal("the success was recorded under the new key, not the one it was checked under")
	}
}

// FuzzUserNamesKey: Key never panics, is a fixed point (a key is its own
// key), ignores case (a name and its upper case, where EqualFold says they
// are one name, give one key), and either keeps the name as typed
// (folded) or gives a user part found in it, in the mail domain.
func FuzzUserNamesKey(f *testing.F) {
	for _, s := range []string{"jdoe", `EXAMPLE\jdoe\x`, "a@b@example.local", `\\@`, "\u212A@EXAMPLE", " @ ", "\xff\\"} {
		f.Add(s)
	}
	u := exampleUserNames(f)
	f.Fuzz(func(t *testing.T, name string) {
		k := u.Key(name)
		if u.Key(k) != k {
			t.Fatalf("Key(%q) = %q, Key of that = %q", name, k, u.Key(k))
		}
		if up := strings.ToUpper(name); utf8.ValidString(name) && strings.EqualFold(name, up) && u.Key(up) != k {
			t.Fatalf("Key(%q) = %q, but Key(%q) = %q", name, k, up, u.Key(up))
		}
		if folded := NormalizeUser(name); k != folded {
			local, ok := strings.CutSuffix(k, "@example.com")
			if !ok || local == "" || strings.Contains(local, `\`) || !strings.Contains(folded, local) {
				t.Fatalf("Key(%q) = %q: neither as typed (%q) nor a user part of it in the domain", name, k, folded)
			}
		}
	})
}
