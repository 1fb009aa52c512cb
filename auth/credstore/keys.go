package credstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/xdg-go/scram"
)

// ServerKeySize is the size of a new server key in bytes; a key file may
// hold a longer one, never a shorter one.
const ServerKeySize = 32

// Labels that derive the subkeys from the server key (HMAC-SHA-256 of the
// label under the key), so each use has a key of its own.
const (
	labelDigest = "imapgate credstore v1: app password digest"
	labelSeal   = "imapgate credstore v1: SCRAM key seal"
	labelCheck  = "imapgate credstore v1: key check"
	labelFake   = "imapgate credstore v1: SCRAM unknown-name salt"
)

// keyring holds the keys derived from one server key. It is safe for
// concurrent use.
type keyring struct {
	digestKey []byte // HMAC key for app password digests
	sealKey   []byte // AES-256-GCM key for SCRAM keys at rest
	check     []byte // stored in the database: tells a wrong key file
	fakeSalt  []byte // auth/scram's Options.Key: made-up salts of unknown login names

	// digests counts HMAC computations of typed passwords, so a test
	// proves one login attempt costs one hash.
	digests atomic.Int64
	// derivations counts SCRAM key derivations (PBKDF2), so a test
	// proves an ID drawn twice does not derive twice.
	derivations atomic.Int64
}

func newKeyring(serverKey []byte) *keyring {
	return &keyring{
		digestKey: mac(serverKey, []byte(labelDigest)),
		sealKey:   mac(serverKey, []byte(labelSeal)),
		check:     mac(serverKey, []byte(labelCheck)),
		fakeSalt:  mac(serverKey, []byte(labelFake)),
	}
}

func mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// digest is the index of an app password: HMAC-SHA-256 of its canonical
// form under the digest key.
func (k *keyring) digest(canonical string) []byte {
	k.digests.Add(1)
	return mac(k.digestKey, []byte(canonical))
}

// sealedSCRAM is how SCRAM-SHA-256 keys rest in a store: salt and
// iteration count in clear (the server sends both to anyone who names the
// login), StoredKey and ServerKey sealed under the seal key.
type sealedSCRAM struct {
	Salt   []byte `json:"salt"`
	Iters  int    `json:"iters"`
	Sealed []byte `json:"sealed"` // nonce, then AES-256-GCM of StoredKey || ServerKey
}

// scramKeys derives the SCRAM-SHA-256 keys of password (RFC 5802 section 3,
// RFC 7677) with a fresh 16-byte salt, as xdg-go/scram's client computes
// them. They do not depend on the credential's ID: seal binds them to it,
// so an ID drawn again costs a seal, not another PBKDF2.
func (k *keyring) scramKeys(password string, iters int) (scram.StoredCredentials, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	// The login name plays no part in the keys; NewClient SASLpreps the
	// password, which leaves the ASCII of an app password as it is.
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("credstore: SCRAM keys: %w", err)
	}
	k.derivations.Add(1)
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iters})
	if err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("credstore: SCRAM keys: %w", err)
	}
	return sc, nil
}

// seal seals SCRAM keys bound to the credential's id.
func (k *keyring) seal(id string, sc scram.StoredCredentials) (sealedSCRAM, error) {
	aead, err := k.aead()
	if err != nil {
		return sealedSCRAM{}, err
	}
	plain := append(append([]byte(nil), sc.StoredKey...), sc.ServerKey...)
	return sealedSCRAM{Salt: []byte(sc.Salt), Iters: sc.Iters, Sealed: aead.Seal(nil, nil, plain, []byte(id))}, nil
}

// open unseals SCRAM keys into what xdg-go/scram's CredentialLookup returns.
func (k *keyring) open(id string, s sealedSCRAM) (scram.StoredCredentials, error) {
	aead, err := k.aead()
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	plain, err := aead.Open(nil, nil, s.Sealed, []byte(id))
	if err != nil || len(plain) != 2*sha256.Size {
		return scram.StoredCredentials{}, fmt.Errorf("%w: SCRAM keys of %s do not open", ErrWrongKey, id)
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(s.Salt), Iters: s.Iters},
		StoredKey:  plain[:sha256.Size],
		ServerKey:  plain[sha256.Size:],
	}, nil
}

// aead returns AES-256-GCM with a random nonce prepended to each sealed
// value.
func (k *keyring) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.sealKey)
	if err != nil {
		return nil, fmt.Errorf("credstore: seal key: %w", err)
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// ParseServerKey reads a key file's content: the key in hex (at least
// ServerKeySize bytes), optionally followed by a newline.
func ParseServerKey(data []byte) ([]byte, error) {
	s := strings.TrimSuffix(string(data), "\n")
	key, err := hex.DecodeString(s)
	switch {
	case err != nil:
		return nil, errors.New("not a hex-encoded key")
	case len(key) < ServerKeySize:
		return nil, fmt.Errorf("key is %d bytes, at least %d are needed", len(key), ServerKeySize)
	}
	return key, nil
}

// loadServerKey reads the key file at path. When it does not exist and
// create is true, it writes a new random key there, mode 0600, and
// reports created.
func loadServerKey(path string, create bool) (key []byte, created bool, err error) {
	f, err := openPrivate(path, os.O_RDONLY, "key file")
	if errors.Is(err, fs.ErrNotExist) && create {
		key, err = writeServerKey(path)
		return key, err == nil, err
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, false, fmt.Errorf("credstore: key file %s: %w", path, err)
	}
	key, err = ParseServerKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("credstore: key file %s: %v", path, err)
	}
	return key, false, nil
}

// writeServerKey creates path (it must not exist) with a fresh key, mode
// 0600, synced with its directory entry.
func writeServerKey(path string) ([]byte, error) {
	key := make([]byte, ServerKeySize)
	_, _ = rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("credstore: key file: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("credstore: key file %s: %w", path, err)
	}
	return key, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
