//go:build !linux

package main

import (
	"math"
	"syscall"
)

// bindAddressNoPort: only Linux has IP_BIND_ADDRESS_NO_PORT.
func bindAddressNoPort(network, address string, c syscall.RawConn) error { return nil }

// raiseOpenFileLimit: elsewhere the limit is left as it is, and unknown.
func raiseOpenFileLimit() (uint64, error) { return math.MaxUint64, nil }

func openFileLimit() (uint64, error) { return math.MaxUint64, nil }
