package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// BenchmarkReadFetchResponse reads a FETCH response of 1000 messages of
// 50 kB from memory: the client's own cost per byte, with no network.
func BenchmarkReadFetchResponse(b *testing.B) {
	var raw bytes.Buffer
	body := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\r\n"), 50_000/45)
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&raw, "* %d FETCH (UID %d BODY[] {%d}\r\n", i, i, len(body))
		raw.Write(body)
		raw.WriteString(")\r\n")
	}
	raw.WriteString("a1 OK UID FETCH completed\r\n")
	b.SetBytes(int64(raw.Len()))
	b.ReportAllocs()
	rd := bytes.NewReader(raw.Bytes())
	c := &client{br: bufio.NewReaderSize(rd, fetchBufSize)}
	for b.Loop() {
		rd.Reset(raw.Bytes())
		c.br.Reset(rd)
		var r response
		if err := c.readResponse("a1", false, &r); err != nil || r.Fetches != 1000 {
			b.Fatal(err, r.Fetches)
		}
	}
}

// BenchmarkBareServerHandshake is the floor of a login's CPU (README
// "Performance"): the CPU time, from /proc/PID/stat, of `imapbench
// handshake-server` (this test binary again, in its own process, with
// imapgate's server TLS configuration and compare's ECDSA P-256
// certificate) per TLS handshake, so that the client's share is not
// counted. Linux only.
//
//	go test -run '^$' -bench BareServerHandshake -benchtime 2000x ./cmd/imapbench/
func BenchmarkBareServerHandshake(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	dir := b.TempDir()
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile, err := tlsconf.WritePEMFiles(dir, cert)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	x25519 := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.X25519}}
	ctx := context.Background()
	h, err := startHandshakeServer(ctx, dir, certFile, keyFile, x25519)
	if err != nil {
		b.Fatal(err)
	}
	defer h.stop()
	for _, k := range []struct {
		name           string
		hybrid, resume bool
	}{{"X25519/full", false, false}, {"X25519MLKEM768/full", true, false}, {"X25519/resumed", false, true}} {
		b.Run(k.name, func(b *testing.B) {
			conf := x25519.Clone()
			if k.hybrid {
				conf.CurvePreferences = nil // Go's default: the hybrid first
			}
			if k.resume {
				conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				if _, err := bareHandshake(ctx, h.addr, conf); err != nil {
					b.Fatal(err)
				}
			}
			before, err := readProcCPU("/proc", []int{h.proc.pid()})
			if err != nil {
				b.Fatal(err)
			}
			var st tls.ConnectionState
			for b.Loop() {
				if st, err = bareHandshake(ctx, h.addr, conf); err != nil {
					b.Fatal(err)
				}
				if st.DidResume != k.resume {
					b.Fatalf("resumed %v, want %v", st.DidResume, k.resume)
				}
			}
			after, err := readProcCPU("/proc", []int{h.proc.pid()})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((after-before).Microseconds())/float64(b.N), "server-cpu-µs/handshake")
			b.Logf("key exchange %s", st.CurveID)
		})
	}
}
