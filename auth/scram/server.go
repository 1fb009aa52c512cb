package scram

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/xdg-go/scram"
	"github.com/xdg-go/stringprep"
)

// StoredCredentials are one login name's SCRAM-SHA-256 keys: salt,
// iteration count, StoredKey and ServerKey (RFC 5802 section 3). It is
// xdg-go/scram's type, which auth/credstore's LookupSCRAM returns.
type StoredCredentials = scram.StoredCredentials

// Lookup finds the keys of a login name: the authcid of the client's
// first message, decoded and SASLprep'd. An error that wraps
// ErrUnknownUser means the name has no usable credential (unknown,
// revoked, expired, not valid on this listener): the exchange goes on with
// made-up keys and fails at the proof, as for a wrong password. Any other
// error ends the exchange with ErrUnavailable.
type Lookup func(ctx context.Context, login string) (StoredCredentials, error)

// Iteration counts a stored credential may have. The client runs PBKDF2
// with this count on every login (the server never does), so it is what a
// phone pays.
const (
	// MinIterations is RFC 7677 section 4's minimum, and what
	// auth/credstore derives keys with by default.
	MinIterations = 4096
	// DefaultMaxIterations is the default Options.MaxIterations: above
	// OWASP's 600,000 for PBKDF2-HMAC-SHA256 (2023), below counts that
	// take a phone several seconds.
	DefaultMaxIterations = 1_000_000
)

// Options tunes a Server. The zero value is ready to use.
type Options struct {
	// Key is the secret the made-up salts of unknown login names are
	// derived from (HMAC-SHA-256), at least 32 bytes. Empty: 32 random
	// bytes drawn by NewServer, so an unknown name keeps its salt for the
	// life of the process and gets another after a restart, while a real
	// one keeps its salt; set it (e.g. derived from the credential store's
	// key) to keep them stable across restarts and the nodes of a cluster.
	Key []byte
	// UnknownIterations is the iteration count announced for unknown
	// login names: set it to the count the store derives keys with, so
	// that unknown names look like the others. Zero: MinIterations, the
	// store's default.
	UnknownIterations int
	// MaxIterations is the highest iteration count accepted from the
	// store; a credential above it ends the exchange with ErrUnavailable.
	// Zero: DefaultMaxIterations.
	MaxIterations int
}

// Server holds what every SCRAM-SHA-256 exchange shares: the lookup and
// the unknown-name key. It is safe for concurrent use.
type Server struct {
	lookup       Lookup
	key          []byte
	unknownIters int
	maxIters     int
	prep         stringprep.Profile
	fakeKeys     []byte // StoredKey and ServerKey of unknown names: random, never sent
	// nonce, when set, replaces xdg-go's server nonce (24 random bytes,
	// base64): tests only.
	nonce func() string
}

// NewServer returns a Server that finds keys with lookup. A nil lookup
// is for callers whose every exchange brings its own
// (ExchangeOptions.Lookup); an exchange with neither fails with
// ErrUnavailable.
func NewServer(lookup Lookup, opts Options) (*Server, error) {
	s := &Server{lookup: lookup, unknownIters: opts.UnknownIterations, maxIters: opts.MaxIterations, prep: saslprepQuery()}
	if s.maxIters == 0 {
		s.maxIters = DefaultMaxIterations
	}
	if s.unknownIters == 0 {
		s.unknownIters = MinIterations
	}
	switch {
	case s.maxIters < MinIterations:
		return nil, fmt.Errorf("scram: MaxIterations %d is below RFC 7677's minimum %d", s.maxIters, MinIterations)
	case s.unknownIters < MinIterations || s.unknownIters > s.maxIters:
		return nil, fmt.Errorf("scram: UnknownIterations %d is outside %d to %d", s.unknownIters, MinIterations, s.maxIters)
	}
	s.fakeKeys = make([]byte, 2*sha256.Size)
	if _, err := rand.Read(s.fakeKeys); err != nil {
		return nil, fmt.Errorf("scram: unknown-name keys: %w", err)
	}
	switch {
	case len(opts.Key) == 0:
		s.key = make([]byte, 32)
		if _, err := rand.Read(s.key); err != nil {
			return nil, fmt.Errorf("scram: unknown-name key: %w", err)
		}
	case len(opts.Key) < 32:
		return nil, fmt.Errorf("scram: Key is %d bytes, want at least 32", len(opts.Key))
	default:
		s.key = append([]byte(nil), opts.Key...)
	}
	return s, nil
}

// fakeSaltLength is the salt length auth/credstore uses.
const fakeSaltLength = 16

// fake returns made-up keys for an unknown login name: a salt that is the
// same each time the name is tried (a real user's salt does not change
// either), derived from the name under the server's key so that nobody
// without it can tell it from a real one; the iteration count the store
// uses; and keys that never leave the server (the exchange refuses them at
// the end whatever the proof). One HMAC: about what a real lookup's
// unsealing costs.
func (s *Server) fake(login string) StoredCredentials {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("imapgate scram unknown-user salt v1\x00"))
	m.Write([]byte(login))
	return StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(m.Sum(nil)[:fakeSaltLength]), Iters: s.unknownIters},
		StoredKey:  s.fakeKeys[:sha256.Size],
		ServerKey:  s.fakeKeys[sha256.Size:],
	}
}

// usable checks keys from the store against this package's limits.
func (s *Server) usable(c StoredCredentials) error {
	switch {
	case c.Iters < MinIterations || c.Iters > s.maxIters:
		return fmt.Errorf("%w: stored credential has %d iterations, outside %d to %d", ErrUnavailable, c.Iters, MinIterations, s.maxIters)
	case c.Salt == "":
		return fmt.Errorf("%w: stored credential has no salt", ErrUnavailable)
	case len(c.StoredKey) != sha256.Size || len(c.ServerKey) != sha256.Size:
		return fmt.Errorf("%w: stored credential keys are not SHA-256 keys", ErrUnavailable)
	}
	return nil
}

// PrepareLogin returns name as an Exchange prepares a client's login name
// (SASLprep as a query string, RFC 5802 section 5.1), or an error when it
// refuses it. A store that hands out login names refuses user names this
// changes: the name a client sends would never match the stored one.
func PrepareLogin(name string) (string, error) { return saslprepQuery().Prepare(name) }

// saslprepQuery is SASLprep (RFC 4013) for query strings, as RFC 5802
// section 5.1 prepares the username: unassigned code points are allowed.
// xdg-go/stringprep's SASLprep is the stored-string profile, which refuses
// them; this is the same profile without table A.1.
func saslprepQuery() stringprep.Profile {
	spaces := stringprep.Mapping{}
	for _, r := range stringprep.TableC1_2 {
		for c := r[0]; c <= r[1]; c++ {
			spaces[c] = []rune{' '} // RFC 4013 section 2.1
		}
	}
	return stringprep.Profile{
		Mappings:  []stringprep.Mapping{stringprep.TableB1, spaces},
		Normalize: true,
		Prohibits: []stringprep.Set{
			stringprep.TableC1_2, stringprep.TableC2_1, stringprep.TableC2_2,
			stringprep.TableC3, stringprep.TableC4, stringprep.TableC5,
			stringprep.TableC6, stringprep.TableC7, stringprep.TableC8,
			stringprep.TableC9,
		},
		CheckBiDi: true,
	}
}
