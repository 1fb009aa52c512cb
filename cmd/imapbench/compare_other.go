//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

// compare reads process memory and nginx's workers from /proc: Linux only.

func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

type procID struct {
	PID   int
	Start uint64
}

func childProcs(procRoot string, ppid int) ([]procID, error) {
	return nil, errors.New("compare needs Linux (/proc)")
}

func (p procID) alive(procRoot string) bool { return false }

func (p procID) kill(procRoot string) error { return nil }

func readProcCPU(procRoot string, pids []int) (time.Duration, error) {
	return 0, errors.New("compare needs Linux (/proc)")
}
