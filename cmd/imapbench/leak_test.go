package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every scenario stops by itself: no goroutine of imapbench (or of the
// in-memory servers the tests start) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
