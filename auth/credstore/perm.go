package credstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// openPrivate opens a file that holds credentials or keys and refuses it,
// with ErrInsecureFile, unless it is a regular file that neither its group
// nor others can read or write. The mode is read from the open file, so
// what is checked is what is read. what names the file in errors.
func openPrivate(path string, flag int, what string) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("credstore: %s: %w", what, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("credstore: %s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s %s is not a regular file", ErrInsecureFile, what, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("%w: %s %s has mode %v: it holds credentials, run chmod 600 %s", ErrInsecureFile, what, path, perm, path)
	}
	return f, nil
}

// ensureDir creates dir with mode 0700 when it does not exist, and refuses
// an existing one that its group or others may write to: whoever can write
// there can put a database and key file of their own in place, with app
// passwords for any user.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("credstore: %w", err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return fmt.Errorf("credstore: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("credstore: %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: directory %s has mode %v: others could replace the credential store in it, run chmod 700 %s", ErrInsecureFile, dir, perm, dir)
	}
	return nil
}
