// Package credstore keeps the per-device credentials imapgate accepts in
// place of a user's own password: app passwords it generates (for PLAIN,
// LOGIN and SCRAM-SHA-256) and client certificate keys (for EXTERNAL),
// each with a label, an optional expiry, a last use, and revocation.
//
//	store, err := credstore.OpenBolt("/var/lib/imapgate/credentials.db", credstore.Options{
//		OnRevoke: func(r credstore.Revoked) { sessions.End(r.ID) },
//	})
//	if err != nil {
//		return err // ErrLocked: another process (the running serve) holds it
//	}
//	defer store.Close() // writes the last uses
//
//	p, secret, err := store.AddAppPassword(ctx, credstore.NewAppPassword{User: "alice", Label: "phone"})
//	fmt.Println(secret.Reveal()) // shown once, never stored: "k3f9-x2ab-..."
//
//	p, err = store.VerifyAppPassword(ctx, credstore.AppPasswordAttempt{
//		User: "alice", Password: typed, Listener: "imaps", Addr: clientIP,
//	})
//	if err != nil {
//		audit.Fail(credstore.Reason(err)) // "app_password_revoked", ...
//	}
//
// Store is the interface, with what every backend must guarantee; Bolt is
// the single-node backend (go.etcd.io/bbolt).
//
// # App passwords
//
// An app password is 28 symbols drawn from crypto/rand in an alphabet of
// 32 (digits and lower-case letters without 0, 1, l and o), 140 bits,
// printed in 7 groups of 4: "k3f9-x2ab-7hmq-...". Lower case and no
// look-alikes make it readable off a screen and typeable on a phone; 140
// bits make guessing it hopeless, which is what lets the store use a fast
// hash. Typing forgives upper case and any spaces or dashes, anywhere or
// none (NormalizeAppPassword).
//
// # One login attempt, one hash: a keyed hash, not argon2id
//
// An app password is found by HMAC-SHA-256(server key, password): the
// digest is the index, so a login costs one HMAC (about a microsecond),
// one B-tree lookup and a constant-time comparison of the user name,
// however many passwords the user or the store has. argon2id is the wrong
// tool here twice over. With a salt per entry it cannot be an index: a
// login would hash once per stored password of the user. With one salt for
// all it could, but each attempt would still cost what argon2id is meant to
// cost (measured on a 2-core Xeon: 39 ms and 19 MiB at OWASP's minimum, 2
// passes; 170 ms and 64 MiB at RFC 9106's second recommendation), spent
// before anything is known about the client: a list of user names and a
// few connections would keep the server's cores busy. What a slow hash
// buys is time against offline guessing of a secret a person chose; a
// 140-bit random secret cannot be guessed either way (2^139 tries on
// average). The server key (32 random bytes, hex, in its own file created
// 0600 beside the database; see Options.KeyFile) means a copy of the
// database alone cannot even be tested against a guess.
//
// # SCRAM: one login name per app password
//
// In SCRAM (RFC 5802, RFC 7677) the server sends the salt and iteration
// count before the client proves anything, so it must know which secret the
// client holds from the login name alone: it cannot try a user's app
// passwords in turn. So every app password has a SCRAM login name of its
// own, "user#id" (SCRAMLogin), and its own SCRAM-SHA-256 keys, derived when
// it is generated from the password as printed (lower case, with the
// dashes: SCRAM's client hashes exactly what it was given, so it is not
// forgiving the way PLAIN is): a 16-byte salt, 4096 iterations
// (Options.SCRAMIterations), StoredKey and ServerKey, which is what
// xdg-go/scram's CredentialLookup returns (LookupSCRAM). StoredKey and
// ServerKey are sealed at rest with AES-256-GCM under a key derived from
// the server key, bound to the credential's ID: with them, one could pose
// as the server (ServerKey) and, having watched one exchange, as the client
// (StoredKey), and they are a PBKDF2 of the password; the database alone
// gives none of that.
//
// The separator is '#'. Clients pass it through unchanged: SCRAM escapes
// only ',' and '=' in names, SASLprep leaves ASCII alone, and Cyrus SASL
// (through mbsync, whose config reads '#' inside a word as part of it) and
// GNU SASL's gsasl send "alice@example.com#k3f9x2ab" as given
// (TestRealClientsLogInWithSCRAMAsUserHashID). It is outside Dovecot's
// default auth_username_chars; unlike '@', '+' and '%' it is not part of
// the user names, subaddresses and virtual-domain forms mail systems use,
// and unlike '*', '\' and '/' not of the master-user and delegate login
// forms; unlike ':' and ';' it does not break curl's -u and login options.
// Where an upstream does allow '#' in names (Active Directory does),
// nothing becomes ambiguous: the name is split at its last '#', an ID
// never contains one, and the whole name must match the stored user and ID
// exactly.
//
// # Client certificates
//
// A certificate is registered by the SHA-256 of its SubjectPublicKeyInfo
// (Fingerprint): the key is what the TLS handshake proves, so a
// certificate renewed with the same key keeps working, and whether a
// presented certificate is in date or chains to a CA is the TLS
// configuration's business. A PEM file with a private key in it is refused
// (ParseCertificatePEM).
//
// # Revocation, tombstones
//
// Revoking deletes a credential's secret material (SCRAM keys) and frees
// its label at once, but keeps a tombstone (the digest or fingerprint, the
// ID, user and label) for Options.TombstoneFor, 90 days by default: a lost
// phone that keeps trying is then audited as app_password_revoked, not
// app_password_unknown, naming the device. After that it is forgotten and
// reads as unknown. Options.OnRevoke is called once the revocation is
// durable, so the serving process can end the credential's open sessions.
//
// # Last use
//
// Each success records the time and client address, in memory (one entry
// per credential, Options.MaxPendingUses at most), written in one
// transaction every Options.FlushEvery (10 s), when the entries fill up,
// and on Flush and Close: a login costs no fsync. A crash loses the uses
// since the last write and nothing else; listings include the unwritten
// ones.
//
// # One process
//
// bbolt lets one process hold the file open (an exclusive lock): the
// running server. Opening fails after Options.LockTimeout with ErrLocked;
// commands that change credentials while the server runs go through the
// server's admin socket, and take effect at the next login.
package credstore
