package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProcField(t *testing.T) {
	tests := []struct {
		file, field string
		want        int64  // bytes
		err         string // a part of the error, when one is wanted
	}{
		{"status_go.txt", "VmRSS", 398104 * 1024, ""},
		{"status_go.txt", "VmHWM", 412332 * 1024, ""},
		{"smaps_rollup_go.txt", "Pss", 394611 * 1024, ""},
		{"smaps_rollup_go.txt", "Rss", 398204 * 1024, ""},
		{"smaps_rollup_reordered.txt", "Pss", 184 * 1024, ""}, // not Pss_Anon, listed first
		{"status_kthread.txt", "VmRSS", 0, "no VmRSS line"},
		{"status_badunit.txt", "VmRSS", 0, `want "N kB"`},
		{"smaps_rollup_empty.txt", "Pss", 0, "no Pss line"},
	}
	for _, tt := range tests {
		f, err := os.Open(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseProcField(f, tt.field)
		f.Close()
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s %s: err = %v, want %q", tt.file, tt.field, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%s %s = %d, %v; want %d", tt.file, tt.field, got, err, tt.want)
		}
	}
}

// nginx has a master and workers: their memory is the sum.
func TestReadProcMemSumsThePIDs(t *testing.T) {
	got, err := readProcMem(filepath.Join("testdata", "proc"), []int{100, 200, 300})
	if err != nil {
		t.Fatal(err)
	}
	want := memSample{RSSBytes: (4100 + 10000 + 12000) * 1024, PSSBytes: (1500 + 7000 + 9000) * 1024}
	if got != want {
		t.Errorf("readProcMem = %+v, want %+v", got, want)
	}
	if _, err := readProcMem(filepath.Join("testdata", "proc"), []int{100, 999}); err == nil {
		t.Error("readProcMem of a missing pid: no error")
	}
}

func TestReadProcMemOfThisProcess(t *testing.T) {
	got, err := readProcMem("/proc", []int{os.Getpid()})
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if got.RSSBytes <= 0 || got.PSSBytes <= 0 || got.PSSBytes > got.RSSBytes {
		t.Errorf("readProcMem(self) = %+v, want 0 < Pss <= RSS", got)
	}
}

func TestParsePIDs(t *testing.T) {
	if got, err := parsePIDs("12, 34,56"); err != nil || len(got) != 3 || got[0] != 12 || got[2] != 56 {
		t.Errorf("parsePIDs = %v, %v", got, err)
	}
	for _, bad := range []string{"x", "12,", "-3", "0"} {
		if _, err := parsePIDs(bad); err == nil {
			t.Errorf("parsePIDs(%q): no error", bad)
		}
	}
}
