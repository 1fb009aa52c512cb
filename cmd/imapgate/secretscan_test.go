package main

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// secretForms are the ways a credential could reach a log: as typed; an
// app password without its dashes (clients accept it so); base64 and hex
// of it; and the base64 SASL messages that carry it for users: PLAIN (with
// and without an authzid), XOAUTH2, and OAUTHBEARER with and without a=
// (RFC 7628). A SCRAM proof or a master secret is a secret like any other:
// list it among the secrets.
func secretForms(secret string, users []string) []string {
	b64 := base64.StdEncoding.EncodeToString
	forms := []string{secret, b64([]byte(secret)), base64.RawStdEncoding.EncodeToString([]byte(secret)), hex.EncodeToString([]byte(secret))}
	if bare := strings.ReplaceAll(secret, "-", ""); bare != secret && len(bare) >= 8 {
		forms = append(forms, bare)
	}
	forms = append(forms, b64([]byte("n,,\x01auth=Bearer "+secret+"\x01\x01")))
	for _, u := range users {
		forms = append(forms,
			b64([]byte("\x00"+u+"\x00"+secret)),
			b64([]byte(u+"\x00"+u+"\x00"+secret)),
			b64([]byte("user="+u+"\x01auth=Bearer "+secret+"\x01\x01")),
			b64([]byte("n,a="+u+",\x01auth=Bearer "+secret+"\x01\x01")),
		)
	}
	return forms
}

// leakedSecrets returns a short description of every secret of secrets
// that text holds in one of its secretForms (never the secret itself).
func leakedSecrets(text string, secrets, users []string) []string {
	var leaks []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for i, f := range secretForms(s, users) {
			if strings.Contains(text, f) {
				leaks = append(leaks, fmt.Sprintf("%s... (form %d)", s[:min(3, len(s))], i))
				break
			}
		}
	}
	return leaks
}

// TestSecretScanCatchesEveryCredentialForm: the scan the end-to-end tests
// run over their logs finds an app password (with and without dashes), a
// token in XOAUTH2 and OAUTHBEARER messages, a password in a PLAIN
// message, a SCRAM proof and the master secret; and it does not cry wolf
// on a log that holds only user names and credential ids.
func TestSecretScanCatchesEveryCredentialForm(t *testing.T) {
	const (
		appPassword = "abcd-efgh-jkmn-pqrs-tuvw-xyz2-3456"
		token       = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyMSJ9.c2lnbmF0dXJl"
		password    = "Correct-Horse-9!"
		scramProof  = "dHpbsHkBNGf7PWQbZ2uFSLUGBvQ="
		master      = "Master-Secret-e2e-7!"
	)
	secrets := []string{appPassword, token, password, scramProof, master}
	users := []string{"user1"}
	b64 := base64.StdEncoding.EncodeToString
	for name, log := range map[string]string{
		"app password":               `{"reason":"x","pw":"` + appPassword + `"}`,
		"app password, no dashes":    strings.ReplaceAll(appPassword, "-", ""),
		"XOAUTH2 message":            "a AUTHENTICATE XOAUTH2 " + b64([]byte("user=user1\x01auth=Bearer "+token+"\x01\x01")),
		"OAUTHBEARER message":        b64([]byte("n,a=user1,\x01auth=Bearer " + token + "\x01\x01")),
		"OAUTHBEARER without a=":     b64([]byte("n,,\x01auth=Bearer " + token + "\x01\x01")),
		"PLAIN message":              b64([]byte("\x00user1\x00" + password)),
		"SCRAM client-final":         "c=biws,r=abc,p=" + scramProof,
		"master secret, base64 SASL": b64([]byte("user1\x00user1\x00" + master)),
	} {
		if leaks := leakedSecrets(log, secrets, users); len(leaks) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
	clean := `{"event":"auth","user":"user1","credential":"app_password","credential_id":"66rq27p8","credential_label":"phone"}`
	if leaks := leakedSecrets(clean, secrets, users); len(leaks) != 0 {
		t.Errorf("a clean log reported as leaking %q", leaks)
	}
}
