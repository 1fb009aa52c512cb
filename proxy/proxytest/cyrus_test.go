package proxytest

import (
	"testing"
)

// TestCyrusStartsWithMailAndTLS: the harness's Cyrus greets on both
// ports, and each user's INBOX holds the seeded messages.
func TestCyrusStartsWithMailAndTLS(t *testing.T) {
	c := StartCyrus(t, CyrusOptions{Messages: 4, ProxyServers: map[string]string{"proxyadmin": "proxy-Secret1"}})
	if err := adminScript(c.Addr, "user1", c.Users["user1"], []string{`s SELECT INBOX`, `f FETCH 3 FLAGS`}); err != nil {
		t.Fatal(err)
	}
}
