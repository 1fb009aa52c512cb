//go:build !linux

package proxytest

import "syscall"

// sysProcAttr: only Linux can tie Dovecot's life to the test binary's.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func processTree(root int) string { return "" }
