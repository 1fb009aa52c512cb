package proxy

import (
	"strings"
	"unicode/utf8"

	"github.com/imapgate/imapgate/auth"
)

// ID limits (RFC 2971 allows 30 pairs, 30-byte fields, 1024-byte values);
// values are cut shorter because they go into every auth event.
const (
	maxIDPairs    = 30
	maxIDFieldLen = 30
	maxIDValueLen = 128
)

// handleID answers ID (RFC 2971) with a fixed reply and keeps the client's
// fields for the audit trail. Apple Mail sends ID before logging in.
func (s *session) handleID(cmd *command) next {
	fields, ok := parseIDArgs(cmd.args)
	if !ok {
		return s.bad(cmd.tag, "ID expects a parenthesized list of field/value pairs or NIL")
	}
	s.clientID = fields
	s.reply(`* ID ("name" "imapgate")`)
	s.reply(cmd.tag + " OK ID completed")
	return stay
}

// parseIDArgs parses "NIL" or "(field value ...)".
func parseIDArgs(args []token) (map[string]string, bool) {
	if len(args) == 1 && args[0].kind == tokAtom && strings.EqualFold(args[0].value, "NIL") {
		return nil, true
	}
	if len(args) < 2 || args[0].kind != tokLParen || args[len(args)-1].kind != tokRParen {
		return nil, false
	}
	inner := args[1 : len(args)-1]
	if len(inner)%2 != 0 {
		return nil, false
	}
	fields := make(map[string]string, min(len(inner)/2, maxIDPairs))
	for i := 0; i < len(inner); i += 2 {
		k, v := inner[i], inner[i+1]
		if !k.isString() || !v.isString() {
			return nil, false
		}
		if len(fields) >= maxIDPairs {
			continue
		}
		val := v.value
		if v.kind == tokAtom && strings.EqualFold(val, "NIL") {
			val = ""
		}
		fields[truncate(strings.ToLower(k.value), maxIDFieldLen)] = sanitize(truncate(val, maxIDValueLen))
	}
	return fields, true
}

// sanitize drops from attacker-supplied text what must not reach an audit
// line: the characters a user name may not hold (control characters C0,
// DEL and C1, line separators, invisible format characters; see
// auth.AllowedInUsername), and invalid UTF-8.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !auth.AllowedInUsername(r) {
			return -1
		}
		return r
	}, s)
}
