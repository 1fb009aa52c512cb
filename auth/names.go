package auth

import (
	"slices"
	"strings"
)

// The mechanism vocabulary: the config check, the AUTH= capabilities and
// AUTHENTICATE all ask these, so a name is listed in one place only.

// known are the mechanism names the configuration recognises: those
// implemented, and those planned, which a config may not name yet.
var known = [...]string{Plain, OAuthBearer, XOAuth2, External, "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"}

// implemented are the mechanisms this build can offer, one file each.
var implemented = [...]mechanism{plain, oauthBearer, xoauth2, scramSHA256, scramSHA256Plus, external}

// Known returns every mechanism name the configuration recognises.
func Known() []string { return slices.Clone(known[:]) }

// Implemented returns the mechanisms this build can offer.
func Implemented() []string {
	names := make([]string, len(implemented))
	for i, m := range implemented {
		names[i] = m.name
	}
	return names
}

// Default returns what a listener offers when the config names no
// mechanisms: PLAIN (RFC 4616), which every IMAP client speaks.
func Default() []string { return []string{Plain} }

// Supported reports whether name (any case) is a mechanism this package
// implements.
func Supported(name string) bool {
	_, ok := lookup(strings.ToUpper(name))
	return ok
}
