package main

import (
	"strings"
	"testing"
)

func TestTSIGSecretFileForms(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"c2VjcmV0\n", "c2VjcmV0"},
		{"  c2VjcmV0  ", "c2VjcmV0"},
		{"key \"acme\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n", "c2VjcmV0"},
		{"key \"acme\" { algorithm hmac-sha256; secret \"unterminated; };", "key \"acme\" { algorithm hmac-sha256; secret \"unterminated; };"},
	} {
		if got := tsigSecret(tt.file); got != tt.want {
			t.Errorf("tsigSecret(%q) = %q, want %q", tt.file, got, tt.want)
		}
	}
}

// FuzzTSIGSecret: any file content gives a result without panicking, and
// a bare secret comes back trimmed.
func FuzzTSIGSecret(f *testing.F) {
	f.Add("c2VjcmV0\n")
	f.Add("key \"k\" { secret \"c2VjcmV0\"; };")
	f.Add("secret{\"")
	f.Fuzz(func(t *testing.T, file string) {
		got := tsigSecret(file)
		if !strings.Contains(file, got) {
			t.Fatalf("tsigSecret(%q) = %q, not part of the file", file, got)
		}
	})
}
