package main

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h, Linux 4.2):
// a socket bound to a source address gets its port at connect time, so
// the 4-tuple, not the bare port, has to be unique. Without it every
// bind(addr, 0) takes a port of its own and the ephemeral range runs out
// after some 28,000 connections whatever the number of source addresses.
const ipBindAddressNoPort = 0x18

// bindAddressNoPort is a net.Dialer Control function for dials with a
// source address. The option is an optimisation: failing to set it is
// not an error.
func bindAddressNoPort(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
}

// raiseOpenFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns the new soft limit.
func raiseOpenFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// openFileLimit returns the soft RLIMIT_NOFILE.
func openFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}
