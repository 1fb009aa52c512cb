package oauth

import (
	"testing"

	"go.uber.org/goleak"
)

// No goroutine the package starts outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
