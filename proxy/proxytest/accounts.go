package proxytest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
)

// accounts are the system users the Dovecot processes run as.
//
// As root (how the tests run): the internal services run as Debian's
// "dovecot" user and the login processes as "dovenull", both created by
// the dovecot-core package, or "nobody" where they are missing. Mail is
// accessed as "nobody": Dovecot refuses mail access as root ("Mail access
// not allowed for root") whatever first_valid_uid says.
//
// As another user everything runs as that user ("rootless" Dovecot:
// no chroot, no privilege changes).
type accounts struct {
	internal, login, internalGroup string
	internalUID, internalGID       int // owner of the users file; -1: leave it
	mailUID, mailGID               int
	rootless                       bool
}

const nobodyID = 65534

func lookupAccounts() (accounts, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return accounts{}, fmt.Errorf("proxytest: current user: %w", err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			return accounts{}, fmt.Errorf("proxytest: group of %s: %w", u.Username, err)
		}
		return accounts{
			internal: u.Username, login: u.Username, internalGroup: g.Name,
			internalUID: -1, internalGID: -1,
			mailUID: os.Geteuid(), mailGID: os.Getegid(),
			rootless: true,
		}, nil
	}
	a := accounts{internal: "nobody", login: "nobody", internalUID: nobodyID, internalGID: nobodyID,
		mailUID: nobodyID, mailGID: nobodyID}
	if u, err := user.Lookup("nobody"); err == nil {
		a.mailUID, a.mailGID = atoi(u.Uid), atoi(u.Gid)
		a.internalUID, a.internalGID = a.mailUID, a.mailGID
	}
	if u, err := user.Lookup("dovecot"); err == nil {
		a.internal, a.internalUID, a.internalGID = "dovecot", atoi(u.Uid), atoi(u.Gid)
	}
	if _, err := user.Lookup("dovenull"); err == nil {
		a.login = "dovenull"
	}
	return a, nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return nobodyID
	}
	return n
}

// passwdFile renders the passwd-file used as passdb and userdb. Passwords
// are stored hashed ({SHA256.HEX}), which also keeps ':' in a password
// from breaking the format; uid, gid and home come from mail_uid,
// mail_gid and mail_location.
func passwdFile(users map[string]string) []byte {
	var b []byte
	for _, u := range sortedUsers(users) {
		sum := sha256.Sum256([]byte(users[u]))
		b = append(b, u+":{SHA256.HEX}"+hex.EncodeToString(sum[:])+"::::::\n"...)
	}
	return b
}

// validUsername reports whether u is a user name the generated passwd
// file and mail paths can hold.
func validUsername(u string) bool {
	if u == "" {
		return false
	}
	for _, r := range u {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '-', r == '_', r == '@':
		default:
			return false
		}
	}
	return true
}

// sortedUsers returns the user names in order.
func sortedUsers(users map[string]string) []string {
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	return names
}
