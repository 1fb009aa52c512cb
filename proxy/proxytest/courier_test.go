package proxytest

import "testing"

// TestCourierStartsWithMailAndTLS: the harness's Courier greets on both
// ports (waitGreeting), its authdaemond knows the users of the userdb,
// and each INBOX holds the seeded messages.
func TestCourierStartsWithMailAndTLS(t *testing.T) {
	c := StartCourier(t, CourierOptions{Messages: 4})
	for u, p := range c.Users {
		if err := adminScript(c.Addr, u, p, []string{`s SELECT INBOX`, `f FETCH 4 FLAGS`}); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
}
