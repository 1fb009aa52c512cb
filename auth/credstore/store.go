package credstore

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// Store holds per-device credentials. Bolt is the single-node
// implementation; a cluster backend (Redis) must give every guarantee
// written here, since callers rely on them. All methods are safe for
// concurrent use.
type Store interface {
	// AddAppPassword generates an app password for req.User and returns
	// its metadata and the password, which is not kept and cannot be
	// shown again. Atomically with the insert it checks that req.Label is
	// unused among req.User's live app passwords (else ErrLabelTaken) and
	// that the new ID is unused by any credential, live or tombstoned: two
	// concurrent adds with one label give one success and one
	// ErrLabelTaken, never two passwords with one label. It returns only
	// once the password is durable: a login after it returns succeeds,
	// also after a restart. A user name whose SCRAM login name SASLprep
	// (RFC 4013) changes or refuses is refused with ErrInvalid: SCRAM
	// clients send the prepared name, which would never match.
	AddAppPassword(ctx context.Context, req NewAppPassword) (AppPassword, Secret, error)

	// VerifyAppPassword checks one login with an app password. It costs
	// one HMAC-SHA-256 of the typed password and one lookup of the
	// result, however many passwords the user or the store has; a typed
	// string that is not an app password's form (NormalizeAppPassword)
	// costs none. It returns the password's metadata, or a
	// *CredentialError wrapping ErrUnknown (also for a password of
	// another user), ErrRevoked (a tombstone of this user's, within
	// Options.TombstoneFor), ErrExpired or ErrScope. A success is
	// recorded as the password's last use (see RecordUse). A revocation
	// that has returned is seen by every later call.
	VerifyAppPassword(ctx context.Context, a AppPasswordAttempt) (AppPassword, error)

	// LookupSCRAM returns the SCRAM-SHA-256 keys of the app password whose
	// SCRAM login name is login (see SplitSCRAMLogin), checked like
	// VerifyAppPassword except that nothing was proved yet: it records no
	// use; the caller calls RecordUse once the client's proof is valid.
	// Errors are *CredentialError values as from VerifyAppPassword.
	LookupSCRAM(ctx context.Context, login, listener string) (SCRAMCredential, error)

	// AddClientCert registers the key of req.Certificate for req.User.
	// Atomically it checks that the key is not registered live (else
	// ErrCertExists; a tombstoned one is replaced) and that the label is
	// unused among the user's live certificates (else ErrLabelTaken).
	// Durable when it returns.
	AddClientCert(ctx context.Context, req NewClientCert) (ClientCert, error)

	// VerifyClientCert finds the registration of the certificate key fp,
	// which the TLS handshake proved the client holds. It returns the
	// registration, or a *CredentialError wrapping ErrUnknown, ErrRevoked
	// or ErrExpired. It checks only the registration: whether the
	// certificate itself is in date, or chains to a CA, is the TLS
	// configuration's business. A success is recorded as the last use.
	VerifyClientCert(ctx context.Context, fp Fingerprint, addr netip.Addr) (ClientCert, error)

	// LookupClientCert is VerifyClientCert without recording a use: for
	// offering EXTERNAL (README "Client certificates") to a client that
	// has not logged in yet.
	LookupClientCert(ctx context.Context, fp Fingerprint) (ClientCert, error)

	// RecordUse notes a successful use of credential id from addr, now.
	// It does not block on storage: uses are kept in memory, bounded by
	// Options.MaxPendingUses, and written every Options.FlushEvery and by
	// Flush and Close; a crash loses the uses since the last write, and
	// nothing else.
	RecordUse(id string, addr netip.Addr)

	// Revoke revokes the credential with that ID, of either kind. The
	// credential's secret material is deleted and a tombstone kept for
	// Options.TombstoneFor, so verification says ErrRevoked rather than
	// ErrUnknown; its label is free again at once. It returns
	// ErrNotFound for an unknown ID and an error wrapping ErrRevoked for
	// one revoked already. Durable when it returns, and seen by every
	// verification that starts after; Options.OnRevoke has been called
	// by then (in a cluster: on every node, as soon as it learns of it).
	Revoke(ctx context.Context, id string) (Revoked, error)

	// RevokeLabel revokes user's live credential of kind with label, as
	// Revoke does; ErrNotFound when there is none.
	RevokeLabel(ctx context.Context, kind Kind, user, label string) (Revoked, error)

	// ListAppPasswords returns user's live app passwords, or everyone's
	// when user is "", ordered by user, then creation. Last uses not yet
	// written are included.
	ListAppPasswords(ctx context.Context, user string) ([]AppPassword, error)

	// ListClientCerts is ListAppPasswords for certificates.
	ListClientCerts(ctx context.Context, user string) ([]ClientCert, error)

	// Flush writes the recorded uses now.
	Flush(ctx context.Context) error

	// Close flushes the recorded uses and releases the store; later calls
	// return ErrClosed. Closing twice is harmless.
	Close() error
}

// Defaults of Options.
const (
	DefaultLockTimeout     = time.Second
	DefaultFlushEvery      = 10 * time.Second
	DefaultMaxPendingUses  = 10000
	DefaultTombstoneFor    = 90 * 24 * time.Hour
	DefaultSCRAMIterations = 4096 // RFC 7677 section 4: at least 4096
)

// tombstonePurgeEvery is how often tombstones older than
// Options.TombstoneFor are deleted, besides at open.
const tombstonePurgeEvery = time.Hour

// Options tune a store. The zero value is ready to use.
type Options struct {
	// KeyFile is the server key's file. If empty, the database's path
	// with ".key" appended. Created 0600 with a random key together with
	// a new database; a database that has credentials refuses to open
	// without its own key file (ErrWrongKey). Keep it out of backups of
	// the database, or at least apart: the database alone cannot be
	// tested against guesses. Every node of a cluster needs the same key.
	KeyFile string

	// LockTimeout is how long opening waits for another process to let
	// go of the database before failing with ErrLocked. If zero,
	// DefaultLockTimeout.
	LockTimeout time.Duration

	// FlushEvery is how often recorded uses are written. If zero,
	// DefaultFlushEvery.
	FlushEvery time.Duration

	// MaxPendingUses bounds the uses kept in memory between writes (one
	// entry per credential, the latest use). When full, a write starts at
	// once and uses of credentials not yet pending are dropped until it
	// is done. If zero, DefaultMaxPendingUses.
	MaxPendingUses int

	// TombstoneFor is how long a revoked credential is remembered, so
	// that a lost phone that keeps trying is audited as revoked rather
	// than unknown. If zero, DefaultTombstoneFor.
	TombstoneFor time.Duration

	// SCRAMIterations is the PBKDF2 iteration count of new app passwords'
	// SCRAM keys. If zero, DefaultSCRAMIterations; fewer are refused.
	SCRAMIterations int

	// OnRevoke is called after each revocation is durable, in the
	// goroutine that revoked, so that the process can end the
	// credential's open sessions. It must not block for long. If nil,
	// nobody is told.
	OnRevoke func(Revoked)

	// Logger receives errors of the background writes of last uses. If
	// nil, slog.Default().
	Logger *slog.Logger

	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

func (o Options) withDefaults(path string) Options {
	if o.KeyFile == "" {
		o.KeyFile = path + ".key"
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.MaxPendingUses == 0 {
		o.MaxPendingUses = DefaultMaxPendingUses
	}
	if o.TombstoneFor == 0 {
		o.TombstoneFor = DefaultTombstoneFor
	}
	if o.SCRAMIterations == 0 {
		o.SCRAMIterations = DefaultSCRAMIterations
	}
	if o.OnRevoke == nil {
		o.OnRevoke = func(Revoked) {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
