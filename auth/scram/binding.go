package scram

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"hash"
	"os"
	"runtime/debug"
	"strings"
	"sync"
)

// BindingType is a TLS channel binding type (RFC 5056), as named in the
// GS2 header's "p=" (RFC 5802 section 6).
type BindingType string

// The channel binding types this package offers (see ConnState.Bindings
// for which on what connection).
const (
	// TLSExporter is 32 bytes of keying material exported with the label
	// "EXPORTER-Channel-Binding" and an empty context (RFC 9266).
	TLSExporter BindingType = "tls-exporter"
	// TLSServerEndPoint is the hash of the server's certificate, with the
	// hash of its signature, SHA-256 for MD5 and SHA-1 (RFC 5929 section
	// 4.1).
	TLSServerEndPoint BindingType = "tls-server-end-point"
	// TLSUnique is the first Finished message of the TLS 1.2 handshake
	// (RFC 5929 section 3), which is what clients that bind on TLS 1.2
	// send (GNU SASL's gsasl does).
	TLSUnique BindingType = "tls-unique"
)

// exporterLabel is RFC 9266 section 2's label; its output is 32 bytes.
const (
	exporterLabel  = "EXPORTER-Channel-Binding"
	exporterLength = 32
)

// ConnState is what channel binding needs of the client's connection.
// The zero value is a plaintext connection: no binding, so no
// SCRAM-SHA-256-PLUS.
type ConnState struct {
	// TLS is the connection's state after its handshake. Nil: a plaintext
	// connection, nothing to bind to.
	TLS *tls.ConnectionState
	// Certificate is the leaf certificate the server presented on this
	// connection: crypto/tls reports the peer's certificates only, so the
	// listener must keep the one it served (with certmagic or SNI, the one
	// GetCertificate returned for this handshake). A resumed session
	// (DidResume) serves none, and its client binds to the certificate of
	// the first handshake, which may have been renewed since: leave it nil
	// then. Nil: tls-server-end-point is not offered.
	Certificate *x509.Certificate
}

// Bindings returns the channel binding types the connection offers, in
// the order RFC 9266 prefers them:
//   - tls-exporter on TLS 1.3. Not on TLS 1.2, even with the extended
//     master secret, where RFC 9266 section 4.2 would allow it: there "no
//     context" and "an empty context" export different bytes (RFC 5705
//     section 4), which implementations do not agree on, and the clients
//     that bind on TLS 1.2 send tls-unique;
//   - tls-unique on TLS 1.2 when the extended master secret (RFC 7627) was
//     negotiated, which is what makes it safe against the triple handshake
//     (RFC 7627 section 1); never on TLS 1.3, where it is undefined
//     (RFC 9266 section 1);
//   - tls-server-end-point whenever Certificate is set and its signature
//     names one hash (not Ed25519, for which RFC 5929 defines none).
//
// An empty result means SCRAM-SHA-256-PLUS must not be advertised.
func (c ConnState) Bindings() []BindingType {
	var types []BindingType
	for _, b := range c.bindings() {
		types = append(types, b.typ)
	}
	return types
}

// binding is an offered channel binding type and this connection's data
// for it.
type binding struct {
	typ  BindingType
	data []byte
}

// bindings returns what Bindings does, with the data.
func (c ConnState) bindings() []binding {
	var offered []binding
	for _, t := range []BindingType{TLSExporter, TLSUnique, TLSServerEndPoint} {
		if data, err := c.bindingData(t); err == nil {
			offered = append(offered, binding{t, data})
		}
	}
	return offered
}

// OffersPlus reports whether SCRAM-SHA-256-PLUS may be advertised on the
// connection: whether it offers at least one channel binding type.
func (c ConnState) OffersPlus() bool { return len(c.Bindings()) > 0 }

var errNoBinding = errors.New("scram: channel binding type not offered on this connection")

// bindingData returns the channel binding data of type t, or errNoBinding.
func (c ConnState) bindingData(t BindingType) ([]byte, error) {
	if c.TLS == nil || !c.TLS.HandshakeComplete {
		return nil, errNoBinding
	}
	switch t {
	case TLSExporter:
		if c.TLS.Version != tls.VersionTLS13 {
			return nil, errNoBinding
		}
		// On TLS 1.3 a nil and an empty context export the same bytes
		// (RFC 8446 section 7.5).
		data, err := c.TLS.ExportKeyingMaterial(exporterLabel, nil, exporterLength)
		if err != nil {
			return nil, errNoBinding
		}
		return data, nil
	case TLSUnique:
		if c.TLS.Version != tls.VersionTLS12 || len(c.TLS.TLSUnique) == 0 || !extendedMasterSecret(c.TLS) {
			return nil, errNoBinding
		}
		return c.TLS.TLSUnique, nil
	case TLSServerEndPoint:
		if c.Certificate == nil {
			return nil, errNoBinding
		}
		h := endPointHash(c.Certificate.SignatureAlgorithm)
		if h == nil {
			return nil, errNoBinding
		}
		h.Write(c.Certificate.Raw)
		return h.Sum(nil), nil
	}
	return nil, errNoBinding
}

// endPointHash is RFC 5929 section 4.1's hash for tls-server-end-point: the
// one the certificate's signature uses, SHA-256 if that is MD5 or SHA-1;
// nil when the signature uses no single hash (Ed25519) or an unknown one.
func endPointHash(alg x509.SignatureAlgorithm) hash.Hash {
	switch alg {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.DSAWithSHA256, x509.ECDSAWithSHA256:
		return sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		return sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		return sha512.New()
	}
	return nil
}

// extendedMasterSecret reports whether a TLS 1.2 connection negotiated the
// extended master secret. crypto/tls does not say so directly, but on TLS
// 1.2 it exports keying material only then (and refuses on connections
// that allow renegotiation), unless GODEBUG=tlsunsafeekm=1 turns that
// check off.
func extendedMasterSecret(cs *tls.ConnectionState) bool {
	if unsafeEKM() {
		return false
	}
	_, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLength)
	return err == nil
}

// unsafeEKM reports whether GODEBUG=tlsunsafeekm=1 is in force, from the
// environment (read each time: os.Setenv changes it at run time) or the
// binary's default GODEBUG (a go.mod godebug line or a //go:debug
// directive).
func unsafeEKM() bool {
	if v, ok := godebugSetting(os.Getenv("GODEBUG"), "tlsunsafeekm"); ok {
		return v == "1"
	}
	v, _ := godebugSetting(defaultGODEBUG(), "tlsunsafeekm")
	return v == "1"
}

// defaultGODEBUG is the binary's default GODEBUG, fixed at build time, so
// read once.
var defaultGODEBUG = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "DefaultGODEBUG" {
				return s.Value
			}
		}
	}
	return ""
})

// godebugSetting returns the value of key in a GODEBUG list; the last one
// wins, as in the runtime.
func godebugSetting(godebug, key string) (val string, found bool) {
	for _, kv := range strings.Split(godebug, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), key+"="); ok {
			val, found = v, true
		}
	}
	return val, found
}
