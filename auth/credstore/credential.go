package credstore

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/xdg-go/scram"
)

// Kind is the sort of a credential.
type Kind uint8

// The kinds of credential a Store holds.
const (
	KindAppPassword Kind = 1 + iota // a generated password, for PLAIN, LOGIN and SCRAM
	KindClientCert                  // a TLS client certificate's key, for EXTERNAL
)

// String returns "app-password" or "client-cert".
func (k Kind) String() string {
	switch k {
	case KindAppPassword:
		return "app-password"
	case KindClientCert:
		return "client-cert"
	}
	return "unknown"
}

// AppPassword is what a store tells about an app password: metadata only,
// never the password or anything derived from it.
type AppPassword struct {
	ID      string    // random, IDSymbols symbols of Alphabet; unique among all credentials
	User    string    // the mailbox it opens
	Label   string    // the device, unique among the user's app passwords
	Created time.Time //
	Expires time.Time // zero: never
	// Scope names the listeners where the password is valid. Empty: all.
	Scope []string
	// LastUsed and LastAddr are the time and client address of the last
	// successful use. Zero: never used.
	LastUsed time.Time
	LastAddr netip.Addr
}

// SCRAMLogin returns the login name SCRAM clients give for this password:
// "user#id" (see LoginSeparator).
func (p AppPassword) SCRAMLogin() string { return SCRAMLogin(p.User, p.ID) }

// Fingerprint is the SHA-256 of a certificate's SubjectPublicKeyInfo: it
// names the key, so a certificate renewed with the same key keeps its
// registration.
type Fingerprint [sha256.Size]byte

// SPKIFingerprint returns the fingerprint of cert's public key.
func SPKIFingerprint(cert *x509.Certificate) Fingerprint {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

// String returns the fingerprint in lower-case hex.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// ClientCert is what a store tells about a registered client certificate.
type ClientCert struct {
	ID          string      // random, like AppPassword.ID, from the same space
	User        string      // the mailbox it opens
	Label       string      // the device, unique among the user's certificates
	Fingerprint Fingerprint // of the certificate's public key: what is matched
	Subject     string      // of the certificate registered, for people reading a list
	NotAfter    time.Time   // of the certificate registered; not checked here (see VerifyClientCert)
	Created     time.Time   //
	Expires     time.Time   // of the registration; zero: never
	LastUsed    time.Time   // zero: never used
	LastAddr    netip.Addr  //
}

// NewAppPassword asks for an app password.
type NewAppPassword struct {
	User  string // required
	Label string // required; unique among User's app passwords
	// Expires is when the password stops working. Zero: never. A time
	// not in the future is refused.
	Expires time.Time
	// Scope names the listeners where the password works. Empty: all.
	Scope []string
}

// NewClientCert registers a client certificate's key.
type NewClientCert struct {
	User  string // required
	Label string // required; unique among User's certificates
	// Certificate is the device's certificate (see ParseCertificatePEM).
	// Only its public key is matched; required.
	Certificate *x509.Certificate
	// Expires is when the registration stops working. Zero: never.
	Expires time.Time
}

// AppPasswordAttempt is one login with an app password.
type AppPasswordAttempt struct {
	User     string     // the user the client named
	Password string     // as typed; see NormalizeAppPassword
	Listener string     // the listener's name, for Scope; may be empty when no password has a scope
	Addr     netip.Addr // the client's address, recorded as last use on success
}

// SCRAMCredential is what LookupSCRAM finds for a login name: the keys
// xdg-go/scram's server needs, and the app password they belong to.
type SCRAMCredential struct {
	AppPassword AppPassword
	Keys        scram.StoredCredentials // secret: never log it
}

// Format shows the app password a credential belongs to, never its keys
// or salt, under every fmt verb.
func (c SCRAMCredential) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "credstore.SCRAMCredential{ID:%q User:%q Label:%q Keys:(redacted)}", c.AppPassword.ID, c.AppPassword.User, c.AppPassword.Label)
}

// LogValue hides the keys from log/slog.
func (c SCRAMCredential) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// Revoked tells that a credential was revoked.
type Revoked struct {
	Kind  Kind
	ID    string
	User  string
	Label string
	At    time.Time
}
