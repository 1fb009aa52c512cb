package proxytest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// The parts Cyrus and Courier share: a server process in the foreground
// of a temporary directory, its binaries found on the system or where
// .ci/run unpacks them, and mail put in over IMAP.

// serversDir is where .ci/run unpacks the Debian packages that cannot be
// installed beside dovecot-imapd (cyrus-imapd and courier-imap declare
// Conflicts: imap-server): dpkg-deb -x of each into serversDir/PACKAGE.
const serversDir = "/opt/imapgate-servers"

// findBinary returns the first of paths that is an executable file.
func findBinary(paths ...string) (string, bool) {
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// daemon is one server process started in the foreground.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    string // the file its stdout and stderr go to
}

// startDaemon starts name with args in dir, with env added to this
// process's environment. Like Dovecot, the process gets SIGTERM from the
// kernel if this process dies first.
func startDaemon(dir, out string, env []string, name string, args ...string) (*daemon, error) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	d := &daemon{cmd: cmd, exited: make(chan struct{}), out: out}
	started := make(chan error)
	go d.runDaemon(started)
	if err := <-started; err != nil {
		return nil, err
	}
	return d, nil
}

// runDaemon starts the process and waits for it on a locked thread:
// Pdeathsig fires when the thread that started the process ends.
func (d *daemon) runDaemon(started chan<- error) {
	defer close(d.exited)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	d.cmd.Wait()
}

// stop sends SIGTERM and waits; after stopTimeout it kills.
func (d *daemon) stop() {
	if d == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// output is what the process printed.
func (d *daemon) output() string {
	b, _ := os.ReadFile(d.out)
	return string(b)
}

// waitGreeting waits until every address greets with "* OK", the
// implicit ones over TLS trusting certPEM; it gives up when the process
// exits or after startTimeout.
func (d *daemon) waitGreeting(certPEM []byte, plain []string, implicit []string) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	conf := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			return fmt.Errorf("exited: %v", d.cmd.ProcessState)
		default:
		}
		last = nil
		for _, a := range plain {
			if last == nil {
				last = greets(a, nil)
			}
		}
		for _, a := range implicit {
			if last == nil {
				last = greets(a, conf)
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("no greeting within %v: %v", startTimeout, last)
}

// writeCertFiles writes a fresh self-signed certificate (localhost,
// 127.0.0.1) into dir as cert.pem and key.pem, and key+cert as
// combined.pem (Courier's TLS_CERTFILE wants both in one file).
func writeCertFiles(dir string) (certPEM []byte, err error) {
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{
		"cert.pem": certPEM, "key.pem": keyPEM, "combined.pem": append(append([]byte(nil), keyPEM...), certPEM...),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return certPEM, nil
}

// seedMessages logs in as user over plaintext IMAP and APPENDs n
// messages (MakeMessage, size bytes) to INBOX: every third \Seen, every
// fifth \Flagged, as on the Exchange-like server.
func seedMessages(addr, user, password string, n, size int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	if _, err := imapwire.ReadLine(r, maxLine); err != nil {
		return err
	}
	run := func(tag, cmd string, literal []byte) error {
		if literal != nil {
			cmd += " {" + strconv.Itoa(len(literal)) + "}"
		}
		w.WriteString(tag + " " + cmd + "\r\n")
		if err := w.Flush(); err != nil {
			return err
		}
		for {
			line, err := imapwire.ReadLine(r, maxLine)
			if err != nil {
				return err
			}
			if literal != nil && len(line) > 0 && line[0] == '+' {
				w.Write(literal)
				w.WriteString("\r\n")
				if err := w.Flush(); err != nil {
					return err
				}
				literal = nil
				continue
			}
			if status, _, ok := imapwire.ParseStatus(line, tag); ok {
				if status != "OK" {
					return fmt.Errorf("%s %s: %q", tag, strings.SplitN(cmd, " ", 2)[0], line)
				}
				return nil
			}
		}
	}
	if err := run("l", "LOGIN "+quoteArg(user)+" "+quoteArg(password), nil); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		var flags []string
		if i%3 == 0 {
			flags = append(flags, `\Seen`)
		}
		if i%5 == 0 {
			flags = append(flags, `\Flagged`)
		}
		if err := run("a"+strconv.Itoa(i), "APPEND INBOX ("+strings.Join(flags, " ")+")", MakeMessage(i-1, size)); err != nil {
			return err
		}
	}
	return run("z", "LOGOUT", nil)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// adminScript logs in to addr (plaintext) as user and runs cmds, each to
// its tagged OK.
func adminScript(addr, user, password string, cmds []string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	login := "l LOGIN " + quoteArg(user) + " " + quoteArg(password)
	return backendScript(c, bufio.NewReader(c), append([]string{login}, cmds...))
}
