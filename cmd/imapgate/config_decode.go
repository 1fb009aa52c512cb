package main

// The generic decoder: problems and their messages, the *table every
// section reads its keys through, unknown-key hints, and value checks
// shared by several sections.

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	Line int    // line of Key in the file; its table's line if Key is missing there; 0 if neither
	Key  string // full dotted key: "upstream.tls", "listen[1].address", "policy.allow[2]"
	Msg  string // what is wrong, and when possible what to write instead
}

func (p Problem) format(path string) string {
	return fmt.Sprintf("%s:%d: %s: %s", path, p.Line, p.Key, p.Msg)
}

// ConfigError is every problem found in one configuration file. Its Error
// text has one "PATH:LINE: key: problem" line per problem, in line order.
type ConfigError struct {
	Path     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.format(e.Path)
	}
	return strings.Join(lines, "\n")
}

// The decoder walks the decoded TOML maps, one method per section. Each
// method reads its keys through a *table, which records type problems and
// which keys are known, then checks the values it read.

type decoder struct {
	lines      keyLines
	checkFiles bool

	problems []Problem
	warnings []Problem
	failed   map[string]bool // keys that already have a problem: report one per key
	missing  map[string]int  // required keys not set -> index in problems

	known    map[string][]string // section -> key names it accepts, for hints
	children map[string]string   // section + "." + name -> section of that sub-table
	sections []string            // known's keys in walk order
	unknown  []unknownKey
}

type unknownKey struct {
	key, name, section string
	table              *table
	line               int
	isTable            bool
}

// table is one TOML table being decoded.
type table struct {
	d       *decoder
	key     string // full key: "" for the document, "tls.acme", "listen[0]"
	section string // kind of table, for hints: "", "[tls.acme]", "[[listen]]"
	parent  *table
	m       map[string]any
	quiet   bool // decoded only to learn key names: report nothing
}

func (d *decoder) root(m map[string]any) *table {
	return &table{d: d, m: m}
}

// keyOf returns the full key of name in t.
func (t *table) keyOf(name string) string { return joinKey(t.key, keyPart(name)) }

// line returns the line of key, or of the closest enclosing table that is
// written in the file, or 0.
func (t *table) line(key string) int {
	if l, ok := t.d.lines[key]; ok {
		return l.line
	}
	for p := t; p != nil; p = p.parent {
		if l, ok := t.d.lines[p.key]; ok && p.key != "" {
			return l.line
		}
	}
	return 0
}

// problemKey records a problem for a full key (of t or below it).
func (t *table) problemKey(key, format string, args ...any) {
	if t.quiet || t.d.failed[key] {
		return
	}
	t.d.failed[key] = true
	t.d.problems = append(t.d.problems, Problem{Line: t.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (t *table) problem(name, format string, args ...any) {
	t.problemKey(t.keyOf(name), format, args...)
}

// missing records that a required key is not set. If the table has an
// unknown key that is a near miss of it ("adress"), only the near miss is
// reported (see reportUnknown).
func (t *table) missing(name, format string, args ...any) {
	if t.quiet || !t.ok(name) {
		return
	}
	for p := t; p != nil; p = p.parent {
		if p.key != "" && t.d.failed[p.key] {
			return // "upstream: want a table" already says it
		}
	}
	t.problem(name, format, args...)
	t.d.missing[t.keyOf(name)] = len(t.d.problems) - 1
}

// warn records a legal but doubtful setting; see Config.Warnings.
func (t *table) warn(name, format string, args ...any) {
	if t.quiet {
		return
	}
	key := t.keyOf(name)
	t.d.warnings = append(t.d.warnings, Problem{Line: t.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// ok reports whether name has no problem so far.
func (t *table) ok(name string) bool { return !t.d.failed[t.keyOf(name)] }

// get returns the raw value of name and registers name as a known key.
func (t *table) get(name string) (any, bool) {
	if !slices.Contains(t.d.known[t.section], name) {
		if _, seen := t.d.known[t.section]; !seen {
			t.d.sections = append(t.d.sections, t.section)
		}
		t.d.known[t.section] = append(t.d.known[t.section], name)
	}
	v, ok := t.m[name]
	return v, ok
}

// typed returns the value of name as a T. It is false when name is not
// set, or holds something else, which it reports as "want WANT, not ...".
func typed[T any](t *table, name, want string) (T, bool) {
	v, ok := t.get(name)
	if !ok {
		var zero T
		return zero, false
	}
	x, ok := v.(T)
	if !ok {
		t.problem(name, "want %s, not %s", want, describe(v))
	}
	return x, ok
}

func (t *table) str(name string, dst *string) {
	if s, ok := typed[string](t, name, "a string"); ok {
		*dst = s
	}
}

func (t *table) boolean(name string, dst *bool) {
	if b, ok := typed[bool](t, name, "true or false"); ok {
		*dst = b
	}
}

// count reads a whole number that may not be negative.
func (t *table) count(name string, dst *int) {
	n, ok := typed[int64](t, name, "a whole number")
	switch {
	case !ok:
	case n < 0:
		t.problem(name, "%d is negative", n)
	case int64(int(n)) != n:
		t.problem(name, "%d is too large", n)
	default:
		*dst = int(n)
	}
}

func (t *table) duration(name string, dst *Duration) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	switch v := v.(type) {
	case string:
		var dur Duration
		if err := dur.UnmarshalText([]byte(v)); err != nil {
			t.problem(name, "%s", err)
			return
		}
		*dst = dur
	case int64:
		t.problem(name, "%d is not a duration (use Go durations like \"90s\", \"31m\")", v)
	default:
		t.problem(name, "want a duration like \"90s\" or \"31m\", not %s", describe(v))
	}
}

// strings reads a list of strings. Problems with one element are reported
// on that element ("auth.mechanisms[1]"); the list is then left unchanged.
func (t *table) strings(name string, dst *[]string) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	list, ok := v.([]any)
	if !ok {
		if s, isString := v.(string); isString {
			t.problem(name, "want a list of strings like [%q], not the string %q", s, s)
		} else {
			t.problem(name, "want a list of strings, not %s", describe(v))
		}
		return
	}
	out := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			t.problemKey(elemKey(t.keyOf(name), i), "want a string, not %s", describe(e))
			continue
		}
		out = append(out, s)
	}
	if len(out) < len(list) {
		t.d.failed[t.keyOf(name)] = true // reported on its elements
		return
	}
	*dst = out
}

// sub returns the table name of t; an empty table if it is absent (present
// is then false) or not a table.
func (t *table) sub(name, section string) (sub *table, present bool) {
	sub = &table{d: t.d, key: t.keyOf(name), section: section, parent: t, quiet: t.quiet}
	t.d.children[t.section+"."+name] = section
	v, ok := t.get(name)
	if !ok {
		return sub, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.problem(name, "want a table (%s), not %s", section, describe(v))
		return sub, false
	}
	sub.m = m
	return sub, true
}

// tables returns the elements of the array of tables name, e.g. [[listen]].
// If there are none it returns one quiet empty table, so that the caller's
// decoding still registers the key names for hints; check len(...) == 1 &&
// quiet before using its result.
func (t *table) tables(name, section string) []*table {
	t.d.children[t.section+"."+name] = section
	v, ok := t.get(name)
	var elems []map[string]any
	switch v := v.(type) {
	case nil:
	case []map[string]any:
		elems = v
	case []any:
		for _, e := range v {
			m, isTable := e.(map[string]any)
			if !isTable {
				t.problem(name, "want one or more %s tables, not a list of %s", section, describe(e))
				elems = nil
				break
			}
			elems = append(elems, m)
		}
	case map[string]any:
		// [listen] where [[listen]] was meant: decode it anyway, to report
		// what else is wrong in it.
		t.problem(name, "write %s (an array of tables), not [%s]", section, strings.Trim(section, "[]"))
		return []*table{{d: t.d, key: t.keyOf(name), section: section, parent: t, m: v, quiet: t.quiet}}
	default:
		t.problem(name, "want one or more %s tables, not %s", section, describe(v))
	}
	if !ok || len(elems) == 0 {
		return []*table{{d: t.d, key: t.keyOf(name), section: section, parent: t, quiet: true}}
	}
	out := make([]*table, len(elems))
	for i, m := range elems {
		out[i] = &table{d: t.d, key: elemKey(t.keyOf(name), i), section: section, parent: t, m: m, quiet: t.quiet}
	}
	return out
}

// decodeTables decodes every table of the array of tables name (e.g.
// [[listen]]) with decode, and returns the tables and the values of those
// that are written in the file.
func decodeTables[T any](t *table, name, section string, decode func(*table) T) ([]*table, []T) {
	tables := t.tables(name, section)
	var values []T
	for _, e := range tables {
		v := decode(e)
		if !e.quiet {
			values = append(values, v)
		}
	}
	return tables, values
}

// done records the keys of t that no decoder asked for.
func (t *table) done() {
	if t.quiet {
		return
	}
	known := t.d.known[t.section]
	for name, v := range t.m {
		if slices.Contains(known, name) {
			continue
		}
		_, isTable := v.(map[string]any)
		key := t.keyOf(name)
		t.d.unknown = append(t.d.unknown, unknownKey{key: key, name: name, section: t.section, table: t, line: t.line(key), isTable: isTable})
	}
}

// reportUnknown turns unknown keys into problems, with a hint when the name
// is a near miss of a key of the same table, or a key of another table.
func (d *decoder) reportUnknown() {
	slices.SortFunc(d.unknown, func(a, b unknownKey) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.key, b.key))
	})
	drop := map[int]bool{}
	for _, u := range d.unknown {
		msg := "unknown key"
		if u.isTable {
			msg = "unknown table"
		}
		if near := closest(u.name, d.known[u.section]); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
			if i, ok := d.missing[u.table.keyOf(near)]; ok {
				drop[i] = true // "address: is required" says nothing more than "adress: did you mean address?"
			}
		} else if homes := d.homes(u.name, u.section); len(homes) > 0 {
			msg += fmt.Sprintf(" (%s %s)", u.name, strings.Join(homes, "; or "))
		}
		d.problems = append(d.problems, Problem{Line: u.line, Key: u.key, Msg: msg})
	}
	if len(drop) > 0 {
		kept := d.problems[:0]
		for i, p := range d.problems {
			if !drop[i] {
				kept = append(kept, p)
			}
		}
		d.problems = kept
	}
}

// homes returns where else a key called name is accepted.
func (d *decoder) homes(name, except string) []string {
	var homes []string
	for _, s := range d.sections {
		if s == except || !slices.Contains(d.known[s], name) {
			continue
		}
		switch child, isTable := d.children[s+"."+name]; {
		case isTable:
			homes = append(homes, "is the table "+child+", not a key")
		case s == "":
			homes = append(homes, "belongs at the top, before any table")
		default:
			homes = append(homes, "belongs in "+s)
		}
	}
	return homes
}

// closest returns the known name nearest to name by edit distance, if it is
// near enough to be a typo.
func closest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		dist := editDistance(name, k)
		if dist < bestDist && dist <= len(k)/3 {
			best, bestDist = k, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names a decoded TOML value for a type problem.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case int64:
		return fmt.Sprintf("the number %d", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	default:
		return "a date"
	}
}

// Value checks.

// oneOf checks that the value of name is one of allowed: the named values
// of the package that uses it (proxy.UpstreamTLS, ...), or the config's own
// words where no package has them.
func oneOf[T ~string](t *table, name, value string, allowed ...T) {
	if slices.Contains(allowed, T(value)) || !t.ok(name) {
		return
	}
	words := make([]string, len(allowed))
	for i, a := range allowed {
		words[i] = string(a)
	}
	t.problem(name, "%q is not one of %s", value, strings.Join(words, ", "))
}

func (t *table) positive(name string, d Duration) {
	if d.Duration <= 0 && t.ok(name) {
		t.problem(name, "must be more than 0")
	}
}

// file checks that a file named in the config can be opened, when the
// decoder checks files.
func (t *table) file(name, path string) {
	if path == "" || !t.d.checkFiles || t.quiet {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.problem(name, "%s", err)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		t.problem(name, "%s", err)
	} else if fi.IsDir() {
		t.problem(name, "%s is a directory, not a file", path)
	}
}

// checkHostPort checks a "host:port" address; emptyHost allows ":993"
// (every local address).
func checkHostPort(s, example string, emptyHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || (host == "" && !emptyHost) || strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("%q is not host:port like %q", s, example)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

// Keys.

// keyPart writes one piece of a key as TOML does, quoted unless bare.
func keyPart(name string) string { return toml.Key{name}.String() }

func joinKey(parent, part string) string {
	if parent == "" {
		return part
	}
	return parent + "." + part
}

func elemKey(key string, i int) string { return key + "[" + strconv.Itoa(i) + "]" }
