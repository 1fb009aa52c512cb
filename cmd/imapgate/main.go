// Command imapgate is a security-focused IMAP proxy: it terminates TLS,
// accepts only SASL authentication over TLS, logs in to a legacy IMAP server
// on the user's behalf and then relays the session byte for byte.
//
//	imapgate serve --config /etc/imapgate/imapgate.toml
//	imapgate check-config --config imapgate.toml
//	imapgate demo
//	imapgate version
//	imapgate audit --since 24h /var/log/imapgate/audit.log
//	imapgate app-password add alice --label phone
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "0.1.0-dev"

const defaultConfigPath = "/etc/imapgate/imapgate.toml"

const usage = `imapgate: a security-focused IMAP proxy

Usage:
  imapgate serve [--config PATH]          run the proxy (SIGTERM/SIGINT drain, SIGHUP reloads)
  imapgate check-config [--config PATH]   validate a config file without binding anything
  imapgate demo                           run a self-contained demo on 127.0.0.1
  imapgate version                        print version information
  imapgate audit [--since T] [--until T] [--json] [FILE...]
                                          review audit logs (standard input when no FILE)
  imapgate app-password add|list|revoke   manage app passwords (imapgate app-password for help)
  imapgate sessions [--json]              list who is logged in through the running serve
  imapgate kick USER | --credential ID    end those sessions
  imapgate client-cert add|list|revoke    manage client certificates for EXTERNAL (imapgate client-cert for help)

--config defaults to ` + defaultConfigPath + `.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve", "check-config":
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", defaultConfigPath, "config file `PATH`")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "imapgate %s: unexpected argument %q\n", cmd, fs.Arg(0))
			return 2
		}
		if cmd == "check-config" {
			return checkConfig(*path, stdout, stderr)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return serve(ctx, *path, stderr)
	case "demo":
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		fs.SetOutput(stderr)
		if err := fs.Parse(args); err != nil {
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := demo(ctx, demoOptions{}, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "imapgate demo: %v\n", err)
			return 1
		}
		return 0
	case "audit":
		return auditCommand(args, os.Stdin, stdout, stderr)
	case "app-password":
		return appPasswordCommand(args, stdout, stderr)
	case "sessions", "kick":
		return sessionsCommand(cmd, args, stdout, stderr)
	case "client-cert":
		return clientCertCommand(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "imapgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func versionString() string {
	commit := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return fmt.Sprintf("imapgate %s (commit %s, %s %s/%s)", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// checkConfig validates a config file: "ok" and 0, or the problems and 1.
func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if _, err := newRunConfig(cfg, nil); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}
