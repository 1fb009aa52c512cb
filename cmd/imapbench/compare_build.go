package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// What a comparison run measures, besides the servers: the imapgate it
// builds from this repository (or is given), and the versions, source
// commit and machine the result names.

// imapgateModule is the module path buildImapgate looks for.
const imapgateModule = "github.com/imapgate/imapgate"

// buildImapgate builds ./cmd/imapgate of the repository this run is in
// into dir and returns the binary's path and the repository's.
func buildImapgate(ctx context.Context, dir string) (bin, root string, err error) {
	if root, err = moduleRoot(); err != nil {
		return "", "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
			goBin = p
		} else {
			return "", "", errors.New("go is not on PATH: install Go, or pass --imapgate PATH to a built imapgate")
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "bin", "imapgate")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/imapgate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/imapgate in %s: %v\n%s", root, err, out)
	}
	return bin, root, nil
}

// gitDescribe names the commit of the checkout at root, and says whether
// tracked files differ from it; "" without git. It only reads: no index
// refresh, no lock.
func gitDescribe(root string) string {
	git, err := exec.LookPath("git")
	if err != nil {
		return ""
	}
	rev, err := exec.Command(git, "-C", root, "--no-optional-locks", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := "commit " + strings.TrimSpace(string(rev))
	changes, err := exec.Command(git, "-C", root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(bytes.TrimSpace(changes)) > 0 {
		s += " + uncommitted changes"
	}
	return s
}

// moduleRoot finds imapgate's source: the working directory or one of its
// parents (go run ./cmd/imapbench from the repository), or else the
// directory this binary was built from.
func moduleRoot() (string, error) {
	var tried []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if isImapgateRoot(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
		tried = append(tried, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Dir(filepath.Dir(filepath.Dir(file))) // .../cmd/imapbench/compare_build.go
		if isImapgateRoot(d) {
			return d, nil
		}
		tried = append(tried, d)
	}
	return "", fmt.Errorf("cannot find imapgate's source (go.mod of %s) in or above %s: run from the repository (go run ./cmd/imapbench compare), or pass --imapgate PATH to a built imapgate",
		imapgateModule, strings.Join(tried, " or "))
}

func isImapgateRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == imapgateModule && fileExists(filepath.Join(dir, "cmd", "imapgate"))
		}
	}
	return false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// commandOutput runs a program for its version line; "?" when it fails.
func commandOutput(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "? (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// machineInfo describes the machine a run measured.
type machineInfo struct {
	CPUs   int    `json:"cpus"` // runtime.NumCPU: the CPUs this process may use
	Model  string `json:"cpu_model"`
	Kernel string `json:"kernel"`
	MemMiB int64  `json:"mem_mib"`
}

func readMachineInfo() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Model: "?", Kernel: runtime.GOOS}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := parseProcField(bytes.NewReader(b), "MemTotal"); err == nil {
			m.MemMiB = kb >> 20
		}
	}
	return m
}

// nginxVersion is "nginx/1.22.1, OpenSSL 3.0.11" from nginx -V.
func nginxVersion(bin string) string {
	out := commandOutput(bin, "-V")
	var parts []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "nginx version: "):
			parts = append(parts, strings.TrimPrefix(line, "nginx version: "))
		case strings.HasPrefix(line, "built with "):
			// "built with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL 3.0.19 27 Jan 2026)":
			// the library that runs is the one measured.
			if _, running, ok := strings.Cut(line, "(running with "); ok {
				line = "built with " + running
			}
			f := strings.Fields(strings.TrimPrefix(line, "built with "))
			if len(f) >= 2 {
				parts = append(parts, f[0]+" "+f[1])
			}
		}
	}
	if len(parts) == 0 {
		return out
	}
	return strings.Join(parts, ", ")
}

func dovecotVersion() string {
	bin, err := lookSbin("dovecot")
	if err != nil {
		return "?"
	}
	return "Dovecot " + commandOutput(bin, "--version")
}
