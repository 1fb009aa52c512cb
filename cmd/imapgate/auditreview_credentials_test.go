package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestAuditReviewGroupsByCredential: the phone's app password logged in
// from home, was revoked, and kept trying from two networks; a token
// expired; a certificate nobody registered was tried. The review lists
// the three credentials by failures with their reasons, networks and the
// phone's last success, and leaves out the real password's failure
// (no credential) and the identity provider being down (an error, not the
// client's failure).
func TestAuditReviewGroupsByCredential(t *testing.T) {
	var log bytes.Buffer
	line := func(sec int, ip, result, reason, kind, id, label string) {
		fmt.Fprintf(&log, `{"time":"2026-11-01T00:00:%02dZ","event":"auth","session":"s%d","client_ip":%q,"client_port":1,"listener":"l","result":%q,"reason":%q,"user":"alice","mechanism":"PLAIN","credential":%q,"credential_id":%q,"credential_label":%q}`+"\n",
			sec, sec, ip, result, reason, kind, id, label)
	}
	line(1, "198.51.100.7", "success", "", "app_password", "phone1", "phone")
	line(2, "198.51.100.7", "failure", "app_password_revoked", "app_password", "phone1", "phone")
	line(3, "203.0.113.9", "failure", "app_password_revoked", "app_password", "phone1", "phone")
	line(4, "203.0.113.9", "failure", "app_password_revoked", "app_password", "phone1", "phone")
	line(5, "192.0.2.1", "failure", "token_expired", "oauth_token", "jti-1", "thunderbird")
	line(6, "192.0.2.1", "failure", "token_expired", "oauth_token", "jti-1", "thunderbird")
	line(7, "192.0.2.2", "failure", "cert_unknown", "client_cert", "", "")
	line(8, "192.0.2.3", "failure", "bad_credentials", "", "", "")
	line(9, "192.0.2.4", "error", "oauth_unavailable", "oauth_token", "jti-2", "thunderbird")

	var out, errOut bytes.Buffer
	if code := auditCommand([]string{"--json"}, bytes.NewReader(log.Bytes()), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep struct {
		Rows []credentialRow `json:"failures_by_credential"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 {
		t.Fatalf("failures_by_credential = %+v, want the phone, the token and the certificate", rep.Rows)
	}
	phone, token, cert := rep.Rows[0], rep.Rows[1], rep.Rows[2]
	if phone.Kind != "app_password" || phone.ID != "phone1" || phone.Label != "phone" || phone.User != "alice" ||
		phone.Failures != 3 || phone.Networks != 2 || phone.Reasons["app_password_revoked"] != 3 ||
		phone.LastSuccess == nil || phone.LastSuccess.Second() != 1 || phone.LastSuccessFrom != "198.51.100.7" {
		t.Errorf("phone row %+v", phone)
	}
	if token.Kind != "oauth_token" || token.ID != "jti-1" || token.Failures != 2 || token.Reasons["token_expired"] != 2 || token.LastSuccess != nil {
		t.Errorf("token row %+v", token)
	}
	if cert.Kind != "client_cert" || cert.Failures != 1 || cert.Reasons["cert_unknown"] != 1 {
		t.Errorf("certificate row %+v", cert)
	}

	out.Reset()
	if code := auditCommand(nil, bytes.NewReader(log.Bytes()), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"Failures by credential", "3 app_password phone1 phone alice 2 app_password_revoked 3 2026-11-01T00:00:01Z from 198.51.100.7", "1 client_cert - - alice 1 cert_unknown 1 none in the log"} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}
}
