package main

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"
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
