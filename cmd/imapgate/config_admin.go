package main

// The [admin] table: the local socket through which the command line
// reaches the running serve.

import (
	"path/filepath"
)

// AdminConfig is the [admin] table.
type AdminConfig struct {
	// Socket is the path of a unix socket serve listens on (created 0600:
	// file permissions decide who may use it; nothing listens on the
	// network) for `imapgate app-password` while serve holds the store.
	// Default: "" (no socket: the commands need serve stopped).
	Socket string `toml:"socket"`
}

func (d *decoder) admin(t *table, a *AdminConfig) {
	t.str("socket", &a.Socket)
	t.done()
	if a.Socket != "" && !filepath.IsAbs(a.Socket) {
		t.problem("socket", "%q is not an absolute path (e.g. \"/run/imapgate/admin.sock\")", a.Socket)
	}
}
