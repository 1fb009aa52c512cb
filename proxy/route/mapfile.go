package route

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxMapFile bounds a map file; a larger one is refused.
const maxMapFile = 64 << 20

// MapFile is a Static map read from a file of lines
//
//	# comment
//	alice@example.org   exchange
//	@example.org        dovecot
//
// (a user or "@domain", blanks, an upstream name). It is re-read when its
// modification time or size changes, checked at most every CheckEvery on
// a lookup: no goroutine, no file system notifications. A file that no
// longer loads leaves the last good map in force, and the error is
// logged once per change.
type MapFile struct {
	// Path is the file. Required.
	Path string
	// CheckEvery is how often a lookup may stat the file. Zero means 30s.
	CheckEvery time.Duration
	// Check, if set, vets a new map before it replaces the old one (the
	// names must be upstreams of the config).
	Check func(*Static) error
	// Log receives reload results. Nil means slog.Default().
	Log *slog.Logger

	mu      sync.Mutex
	m       *Static
	names   []string
	mtime   time.Time
	size    int64
	checked time.Time
	badAt   time.Time // mtime of the last file that failed to load
}

// LoadMapFile reads and parses path, for check-config and start: an
// error names the file and the line.
func LoadMapFile(path string) (*MapFile, error) {
	f := &MapFile{Path: path}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// Upstreams returns the upstream names the map uses, sorted.
func (f *MapFile) Upstreams() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.names)
}

// load reads the file; it replaces the map only when the file parses and
// Check accepts it.
func (f *MapFile) load() error {
	fi, err := os.Stat(f.Path)
	if err != nil {
		return err
	}
	if fi.Size() > maxMapFile {
		return fmt.Errorf("%s: %d bytes, more than the %d a map file may have", f.Path, fi.Size(), maxMapFile)
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return err
	}
	entries, err := ParseMap(f.Path, data)
	if err != nil {
		return err
	}
	m := newStatic(entries, "map_file")
	if f.Check != nil {
		if err := f.Check(m); err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Upstream] = true
	}
	f.mu.Lock()
	f.m, f.mtime, f.size = m, fi.ModTime(), fi.Size()
	f.names = slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	})
	f.mu.Unlock()
	return nil
}

// ParseMap parses the lines of a map file; name is used in errors
// ("routes.map:3: ...").
func ParseMap(name string, data []byte) ([]Entry, error) {
	var entries []Entry
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
			continue
		case len(fields) != 2:
			return nil, fmt.Errorf("%s:%d: want \"user-or-@domain upstream\", not %d fields", name, n, len(fields))
		}
		if err := CheckMatch(fields[0]); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		key := strings.ToLower(fields[0])
		if prev, dup := seen[key]; dup {
			return nil, fmt.Errorf("%s:%d: %s is already on line %d", name, n, fields[0], prev)
		}
		seen[key] = n
		entries = append(entries, Entry{Match: fields[0], Upstream: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return entries, nil
}

// Lookup answers from the map, after re-reading the file if it changed.
func (f *MapFile) Lookup(ctx context.Context, q Query) (Answer, error) {
	f.refresh()
	f.mu.Lock()
	m := f.m
	f.mu.Unlock()
	return m.Lookup(ctx, q)
}

// Reload re-reads the file now if it changed (SIGHUP does a full reload
// instead; tests call this).
func (f *MapFile) Reload() error {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
	return f.refresh()
}

func (f *MapFile) refresh() error {
	now := time.Now()
	f.mu.Lock()
	every := f.CheckEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	if now.Sub(f.checked) < every {
		f.mu.Unlock()
		return nil
	}
	f.checked = now
	mtime, size, bad := f.mtime, f.size, f.badAt
	f.mu.Unlock()
	fi, err := os.Stat(f.Path)
	if err == nil && fi.ModTime().Equal(mtime) && fi.Size() == size {
		return nil
	}
	if err == nil && fi.ModTime().Equal(bad) {
		return nil // already reported
	}
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	if err == nil {
		err = f.load()
	}
	if err != nil {
		if fi != nil {
			f.mu.Lock()
			f.badAt = fi.ModTime()
			f.mu.Unlock()
		}
		log.Error("routing map file not reloaded; the last good one stays in force", "file", f.Path, "err", err)
		return err
	}
	log.Info("routing map file reloaded", "file", f.Path, "entries", f.len())
	return nil
}

func (f *MapFile) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m.Len()
}
