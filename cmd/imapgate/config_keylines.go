package main

// The line each key is written on. BurntSushi/toml, which decodes the
// values, keeps key positions private; go-toml's parser (package unstable)
// hands out every key with its place in the text, so this file only names
// the keys the way the decoder does.

import (
	"bytes"
	"sort"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyLines maps each full key of a TOML document to the line it is written
// on. Tables are keyed by their header ("tls.acme", "listen[1]"), array
// elements by index ("policy.allow[0]"); keys of tables named only as part
// of a longer key ("tls" in [tls.acme]) are "implicit" and give way to their
// own header.
type keyLines map[string]keyLine

type keyLine struct {
	line     int
	implicit bool
}

// findKeyLines finds the line of every key in src. It is run on text
// BurntSushi/toml has already parsed; on any other text it returns the
// keys written before the first syntax error (see FuzzKeyLines).
func findKeyLines(src []byte) keyLines {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf"))
	w := &keyWalker{arrays: map[string]int{}, lines: keyLines{}}
	for i, c := range src {
		if c == '\n' {
			w.newlines = append(w.newlines, i)
		}
	}
	w.p.Reset(src)
	for w.p.NextExpression() {
		n := w.p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			w.header(n)
		case unstable.KeyValue:
			w.keyValue(w.table, n)
		}
	}
	return w.lines
}

// keyWalker names the keys of a document as the decoder does.
type keyWalker struct {
	p        unstable.Parser
	newlines []int          // offsets of '\n', to turn offsets into lines
	table    string         // key of the current [table]
	arrays   map[string]int // [[array]] key -> elements so far
	lines    keyLines
}

// record notes the line of node n for key, unless key has a line already
// (an implicit one gives way to the key's own).
func (w *keyWalker) record(key string, n *unstable.Node, implicit bool) {
	if old, ok := w.lines[key]; ok && (implicit || !old.implicit) {
		return
	}
	w.lines[key] = keyLine{line: sort.SearchInts(w.newlines, int(n.Raw.Offset)) + 1, implicit: implicit}
}

// header reads "[a.b]" or "[[a.b]]" and makes it the current table.
func (w *keyWalker) header(n *unstable.Node) {
	array := n.Kind == unstable.ArrayTable
	at := n.Child() // the first key part, on the header's line
	key := ""
	for it := n.Key(); it.Next(); {
		last := it.IsLast()
		key = joinKey(key, keyPart(string(it.Node().Data)))
		if count, isArray := w.arrays[key]; isArray && !(last && array) {
			key = elemKey(key, count-1) // [listen.x] after [[listen]]: the latest element
		}
		if last && array {
			w.record(key, at, false) // the array itself: its first element's line
			w.arrays[key]++
			key = elemKey(key, w.arrays[key]-1)
		}
		if !last {
			w.record(key, at, true)
		}
	}
	w.record(key, at, false)
	w.table = key
}

// keyValue reads "key = value" (n) inside the table base.
func (w *keyWalker) keyValue(base string, n *unstable.Node) {
	key := base
	for it := n.Key(); it.Next(); {
		key = joinKey(key, keyPart(string(it.Node().Data)))
		w.record(key, n, !it.IsLast())
	}
	w.value(key, n, n.Value())
}

// value records the elements of an array and the keys of an inline table.
// An array has no place of its own in the parser's nodes: an element that
// is one stands where its first scalar does, or, empty, where at (the
// key = value it belongs to) does.
func (w *keyWalker) value(key string, at, v *unstable.Node) {
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); i++ {
			e := it.Node()
			place := e
			for place.Kind == unstable.Array && place.Child() != nil {
				place = place.Child()
			}
			if place.Kind == unstable.Array {
				place = at
			}
			elem := elemKey(key, i)
			w.record(elem, place, false)
			w.value(elem, at, e)
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			w.keyValue(key, it.Node())
		}
	}
}
