package proxy

import (
	"slices"
	"testing"
)

// TestPostLoginCapabilitiesHideWhatBypassesTheProxy: what describes the
// upstream's pre-login state, or would let the client authenticate again
// straight to the upstream (UNAUTHENTICATE, which Cyrus 3.6 offers its
// admins), never reaches the client; everything else does, in order.
func TestPostLoginCapabilitiesHideWhatBypassesTheProxy(t *testing.T) {
	upstream := []string{"IMAP4rev1", "STARTTLS", "auth=PLAIN", "AUTH=GSSAPI", "SASL-IR", "LOGINDISABLED", "Unauthenticate", "IDLE", "MOVE", "UIDPLUS"}
	got := clientCapabilities(upstream)
	if want := []string{"IMAP4rev1", "IDLE", "MOVE", "UIDPLUS"}; !slices.Equal(got, want) {
		t.Fatalf("clientCapabilities(%q) = %q, want %q", upstream, got, want)
	}
}
